import type { OpenAPIHono } from '@hono/zod-openapi'
import { version } from '../../package.json'
import { notFound } from '../lib/api-error'
import { FORM_MEDIA_TYPE, MULTIPART_MEDIA_TYPE } from '../middleware/body'
import { declaredPolicy, routePolicy } from '../middleware/route-policy'
import { API_PREFIX, problems } from '../router'
import type { AppEnv } from '../router'

type Document = ReturnType<OpenAPIHono<AppEnv>['getOpenAPI31Document']>

const INFO = {
  title: 'edgepress API',
  version,
  license: { name: 'MIT', identifier: 'MIT' },
  description: [
    'An authenticated JSON API on Cloudflare Workers: JWT auth with rotating refresh tokens, posts, and a',
    'double opt-in mailing list.',
    '',
    '* Errors are RFC 9457 `application/problem+json` with a stable `code` (see the `Problem` schema).',
    '* Lists are cursor-paginated: `{results, next, previous}`, `limit` 1–100 (default 20).',
    '* Auth endpoints and the unsubscribe endpoint also accept `application/x-www-form-urlencoded` bodies (the',
    '  unsubscribe one `multipart/form-data` too, for RFC 8058 one-click); others answer 415 to them.',
    '* Every response carries `X-Request-Id`.',
  ].join('\n'),
}

/**
 * Serves GET /openapi.json (OpenAPI 3.1) from the routes' own zod definitions. The document is
 * built once per isolate (zod → JSON Schema is the costly part); only `servers` follows the request.
 */
export function serveOpenApiDocument(app: OpenAPIHono<AppEnv>): void {
  app.openAPIRegistry.registerComponent('securitySchemes', 'Bearer', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: `Access token from POST ${API_PREFIX}/auth/token. \`Authorization: JWT <token>\` is accepted too.`,
  })
  app.openAPIRegistry.registerComponent('securitySchemes', 'Basic', {
    type: 'http',
    scheme: 'basic',
    description: `Username (or email) and password; only on POST ${API_PREFIX}/auth/token and /login.`,
  })
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/openapi.json',
    tags: ['Meta'],
    summary: 'This OpenAPI 3.1 document',
    responses: {
      200: { description: 'The document', content: { 'application/json': { schema: { type: 'object' } } } },
      ...problems(405),
    },
  })
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/docs',
    tags: ['Meta'],
    summary: 'Interactive API reference (self-hosted assets, works offline)',
    responses: {
      200: { description: 'An HTML page', content: { 'text/html': { schema: { type: 'string' } } } },
      ...problems(404),
    },
  })

  app.get('/docs', routePolicy({ htmlPage: true }), async (c) => {
    // The vitest pool runs without static assets; `wrangler dev` and production have them.
    if (c.env.ASSETS === undefined) throw notFound('docs page')
    const page = await c.env.ASSETS.fetch(new Request(new URL('/docs', c.req.url)))
    const headers: Record<string, string> = {}
    page.headers.forEach((value, name) => {
      headers[name] = value
    })
    return c.body(await page.arrayBuffer(), page.status as 200, headers)
  })

  let document: Document | undefined
  app.get('/openapi.json', (c) => {
    document ??= completeDocument(app.getOpenAPI31Document({ openapi: '3.1.0', info: INFO }), bodyOperations(app))
    c.header('Cache-Control', 'public, max-age=300')
    return c.json({ ...document, servers: [{ url: new URL(c.req.url).origin }] })
  })
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const

/** The 503 of an outage, as it appears in the generated document (the Problem schema by reference). */
const OUTAGE_RESPONSE = {
  description: 'D1 or KV is unreachable (`service_unavailable`); retry after Retry-After',
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
}

/** The media types other than JSON a route's policy accepts, by operation (`post /api/v1/auth/token`). */
type AlternativeBodies = ReadonlyMap<string, string[]>

/** For every route that declares `formBody` (and `multipartBody`), with OpenAPI's `{id}` paths. */
function bodyOperations(app: OpenAPIHono<AppEnv>): AlternativeBodies {
  const operations = new Map<string, string[]>()
  for (const route of app.routes) {
    const policy = declaredPolicy(route.handler)
    if (policy?.formBody !== true) continue
    const mediaTypes = policy.multipartBody === true ? [FORM_MEDIA_TYPE, MULTIPART_MEDIA_TYPE] : [FORM_MEDIA_TYPE]
    operations.set(`${route.method.toLowerCase()} ${route.path.replace(/:(\w+)/g, '{$1}')}`, mediaTypes)
  }
  return operations
}

/**
 * What the route definitions do not say themselves: the form alternative of the bodies of routes
 * that declare `formBody`, an explicit empty `security` on public operations, and a stable
 * operationId for code generators.
 */
function completeDocument(document: Document, formBodies: AlternativeBodies): Document {
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    for (const method of METHODS) {
      const operation = item[method]
      if (operation === undefined) continue
      operation.operationId ??= operationIdFor(method, path)
      operation.security ??= []
      // Every API operation reads D1 or KV, so each may answer 503 when one is down (src/lib/outages.ts).
      if (path.startsWith(API_PREFIX) && operation.responses !== undefined)
        operation.responses['503'] ??= OUTAGE_RESPONSE
      // Declared here rather than on the routes: a second zod media type there would make
      // zod-openapi validate each body twice (once per media type), and negotiateBody() already
      // turns form bodies into the JSON the route validates.
      const requestBody = operation.requestBody
      const mediaTypes = formBodies.get(`${method} ${path}`)
      if (mediaTypes === undefined || requestBody === undefined || '$ref' in requestBody) continue
      const json = requestBody.content['application/json']
      if (json !== undefined) for (const mediaType of mediaTypes) requestBody.content[mediaType] = json
    }
  }
  return document
}

/** `post /api/v1/auth/token/refresh` → `postAuthTokenRefresh`; `{id}` → `ById`. */
function operationIdFor(method: string, path: string): string {
  const words = (path.startsWith(API_PREFIX) ? path.slice(API_PREFIX.length) : path)
    .split(/[/.-]/)
    .filter((segment) => segment !== '')
    .map((segment) => (segment.startsWith('{') ? `By${capitalize(segment.slice(1, -1))}` : capitalize(segment)))
  return method + words.join('')
}

function capitalize(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1)
}
