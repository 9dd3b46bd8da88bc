import { describe, expect, it } from 'vitest'
import { api } from '../../test/helpers'
import { createApp } from '../app'

interface Operation {
  operationId?: string
  security?: unknown[]
  requestBody?: { content: Record<string, unknown> }
  responses: Record<string, { content?: Record<string, unknown> }>
}
type Paths = Record<string, Partial<Record<'get' | 'post' | 'put' | 'patch' | 'delete', Operation>>>

async function openApiDocument(): Promise<{
  openapi: string
  paths: Paths
  components: Record<string, Record<string, unknown>>
  servers: { url: string }[]
}> {
  const res = await api('GET', '/openapi.json')
  expect(res.status).toBe(200)
  return res.json()
}

const METHODS = ['get', 'put', 'post', 'patch', 'delete'] as const

/**
 * Every operation the app serves, from its own routes (Hono's `:id` spelled OpenAPI's `{id}`): the
 * document must describe each of them and nothing else. (`npm run check:docs` holds docs/API.md's
 * endpoint tables to the same document.)
 */
function servedRoutes(): string[] {
  const app = createApp()
  const routes = app.routes
    .filter((route) => (METHODS as readonly string[]).includes(route.method.toLowerCase()))
    .map((route) => `${route.method.toLowerCase()} ${route.path.replace(/:(\w+)/g, '{$1}')}`)
  return [...new Set(routes)].sort()
}

function documentedRoutes(paths: Paths): string[] {
  return Object.entries(paths)
    .flatMap(([path, item]) =>
      METHODS.filter((method) => item[method] !== undefined).map((method) => `${method} ${path}`),
    )
    .sort()
}

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3.1 document describing every route the app serves and nothing else', async () => {
    const document = await openApiDocument()
    expect(document.openapi).toBe('3.1.0')
    const served = servedRoutes()
    expect(served.length).toBeGreaterThanOrEqual(40)
    expect(documentedRoutes(document.paths)).toEqual(served)
    // Itself, the reference page and the key set too (docs/API.md, precise point 10).
    expect(served).toEqual(expect.arrayContaining(['get /openapi.json', 'get /docs', 'get /.well-known/jwks.json']))
  })

  it('gives every operation an operationId, a security requirement and documented problems', async () => {
    const document = await openApiDocument()
    const ids = new Set<string>()
    for (const [path, item] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        expect(operation.operationId, `${method} ${path}`).toMatch(/^[a-z]+[A-Za-z]*$/)
        ids.add(operation.operationId!)
        expect(Array.isArray(operation.security), `${method} ${path}`).toBe(true)
        const problemStatuses = Object.entries(operation.responses).filter(
          ([, r]) => r.content?.['application/problem+json'] !== undefined,
        )
        expect(problemStatuses.length, `${method} ${path}`).toBeGreaterThan(0)
      }
    }
    expect(ids.size).toBe(servedRoutes().length)
  })

  it('documents the form-urlencoded alternative exactly on the auth endpoints that take one', async () => {
    const document = await openApiDocument()
    const form = 'application/x-www-form-urlencoded'
    for (const path of [
      'register',
      'token',
      'login',
      'token/refresh',
      'token/verify',
      'password/reset',
      'password/reset/confirm',
      'email/verify',
    ]) {
      expect(document.paths[`/api/v1/auth/${path}`]?.post?.requestBody?.content[form], path).toBeDefined()
    }
    expect(document.paths['/api/v1/posts']?.post?.requestBody?.content[form]).toBeUndefined()
    expect(document.paths['/api/v1/auth/password/change']?.post?.requestBody?.content[form]).toBeUndefined()
  })

  it('documents the one-click unsubscribe bodies (urlencoded and multipart) and multipart nowhere else', async () => {
    const document = await openApiDocument()
    const unsubscribe = document.paths['/api/v1/subscribers/unsubscribe']?.post?.requestBody?.content
    expect(unsubscribe?.['application/x-www-form-urlencoded']).toBeDefined()
    expect(unsubscribe?.['multipart/form-data']).toBeDefined()
    expect(document.paths['/api/v1/auth/token']?.post?.requestBody?.content['multipart/form-data']).toBeUndefined()
  })

  it('declares the bearer scheme, the problem schema with the stable codes, and the request origin as server', async () => {
    const document = await openApiDocument()
    expect(document.components.securitySchemes?.Bearer).toMatchObject({ type: 'http', scheme: 'bearer' })
    const problem = document.components.schemas?.Problem as { properties: { code: { enum: string[] } } }
    expect(problem.properties.code.enum).toEqual(
      expect.arrayContaining(['validation_failed', 'token_reused', 'rate_limited', 'internal_error']),
    )
    expect(document.servers).toEqual([{ url: 'https://edgepress.test' }])
    expect(document.paths['/api/v1/users/me']?.get?.security).toEqual([{ Bearer: [] }])
    expect(document.paths['/api/v1/posts']?.get?.security).toEqual([])
  })

  it('documents 503 service_unavailable on every API operation (D1 or KV down)', async () => {
    const document = await openApiDocument()
    for (const [path, item] of Object.entries(document.paths)) {
      if (!path.startsWith('/api/v1/')) continue
      for (const [method, operation] of Object.entries(item)) {
        expect(operation.responses['503']?.content?.['application/problem+json'], `${method} ${path}`).toBeDefined()
      }
    }
  })

  it('documents 429 on every authenticated write, which counts against the per-user write limit', async () => {
    const document = await openApiDocument()
    const writes = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.entries(item)
        .filter(([method, operation]) => method !== 'get' && (operation.security ?? []).length > 0)
        .map(([method, operation]) => [`${method} ${path}`, operation] as const),
    )
    expect(writes.length).toBeGreaterThanOrEqual(15)
    for (const [label, operation] of writes) {
      expect(operation.responses['429']?.content?.['application/problem+json'], label).toBeDefined()
    }
  })
})
