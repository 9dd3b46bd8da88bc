import { createRoute, z } from '@hono/zod-openapi'
import { Hono } from 'hono'
import type { Context } from 'hono'
import { describe, expect, it } from 'vitest'
import { createRouter } from '../router'
import { requireUser } from './authenticate'
import { declaredPolicy, policyOf, routePolicy } from './route-policy'
import type { RoutePolicy } from './route-policy'
import { BASE_URL } from '../../test/helpers'

// Route policy (src/middleware/route-policy.ts): the marker a route declares, and policyOf(), which
// the app-level middleware call before the route runs. The tiny apps below record what policyOf()
// answered in an app-level middleware, as the edge cache and body negotiation do.

/** An app whose app-level middleware records policyOf() for each request. */
function recordingApp(): { app: Hono; policies: RoutePolicy[] } {
  const policies: RoutePolicy[] = []
  const app = new Hono()
  app.use(async (c, next) => {
    policies.push(policyOf(c))
    await next()
  })
  return { app, policies }
}

const ok = (c: Context) => c.text('handled')

async function policyFor(app: Hono, policies: RoutePolicy[], method: string, path: string): Promise<RoutePolicy> {
  policies.length = 0
  const res = await app.request(`${BASE_URL}${path}`, { method })
  await res.body?.cancel()
  expect(policies).toHaveLength(1)
  return policies[0]!
}

describe('routePolicy()', () => {
  it('is a marker that only passes the request on to the route', async () => {
    const app = new Hono()
    app.get('/marked', routePolicy({ edgeCached: true }), ok)
    const res = await app.request(`${BASE_URL}/marked`)
    expect(res.status).toBe(200)
    expect(await res.text()).toBe('handled')
  })

  it('declares a frozen copy of the policy it was given', () => {
    const policy: RoutePolicy = { formBody: true }
    const marker = routePolicy(policy)
    policy.formBody = false
    policy.edgeCached = true

    const declared = declaredPolicy(marker)
    expect(declared).toEqual({ formBody: true })
    expect(Object.isFrozen(declared)).toBe(true)
  })
})

describe('declaredPolicy()', () => {
  it('reads the policy of a marker and nothing from anything else', () => {
    expect(declaredPolicy(routePolicy({ d1Primary: true, htmlPage: true }))).toEqual({
      d1Primary: true,
      htmlPage: true,
    })
    expect(declaredPolicy(routePolicy({}))).toEqual({})
    for (const other of [ok, requireUser(), async () => undefined, undefined, null, {}, { edgeCached: true }, 'x']) {
      expect(declaredPolicy(other)).toBeUndefined()
    }
  })
})

describe('policyOf()', () => {
  const { app, policies } = recordingApp()
  app.use('/users/*', async (_c, next) => next())
  app.get('/users/me', routePolicy({ d1Primary: true }), ok)
  app.post('/users/me', routePolicy({ formBody: true }), ok)
  app.get('/users/:id', routePolicy({ edgeCached: true }), ok)
  app.get('/plain', ok)

  it('is the policy of the route that answers: a static route registered first wins over a parameterised one', async () => {
    expect(await policyFor(app, policies, 'GET', '/users/me')).toEqual({ d1Primary: true })
    expect(await policyFor(app, policies, 'GET', '/users/42')).toEqual({ edgeCached: true })
  })

  it('takes the policy of the matched method only: another method of the same path declares its own', async () => {
    expect(await policyFor(app, policies, 'POST', '/users/me')).toEqual({ formBody: true })
  })

  it('is empty for a route without a marker, an unknown path and a method no route has', async () => {
    for (const [method, path] of [
      ['GET', '/plain'],
      ['GET', '/nowhere'],
      ['DELETE', '/users/me'],
    ] as const) {
      const policy = await policyFor(app, policies, method, path)
      expect(policy, `${method} ${path}`).toEqual({})
      expect(Object.isFrozen(policy)).toBe(true)
    }
  })

  it('follows registration order: a parameterised route registered first answers the static path too', async () => {
    const other = recordingApp()
    other.app.get('/users/:id', routePolicy({ edgeCached: true }), ok)
    other.app.get('/users/me', routePolicy({ d1Primary: true }), ok)
    expect(await policyFor(other.app, other.policies, 'GET', '/users/me')).toEqual({ edgeCached: true })
  })

  it('reads a marker declared in an OpenAPI route of createRouter(), mounted under a prefix', async () => {
    const thing = createRoute({
      method: 'get',
      path: '/things/{id}',
      middleware: [routePolicy({ edgeCached: true, purgesEdgeCache: false })] as const,
      request: { params: z.object({ id: z.string() }) },
      responses: { 200: { description: 'A thing' } },
    })
    const router = createRouter().openapi(thing, (c) => c.text(c.req.valid('param').id))
    const mounted = recordingApp()
    mounted.app.route('/api/v1', router)

    expect(await policyFor(mounted.app, mounted.policies, 'GET', '/api/v1/things/7')).toEqual({
      edgeCached: true,
      purgesEdgeCache: false,
    })
  })

  it('cannot see the marker of a router that sets its own onError (why resource routers must not)', async () => {
    const router = new Hono()
    router.get('/things/:id', routePolicy({ edgeCached: true }), ok)
    router.onError((_err, c) => c.text('handled by the router', 500))
    const mounted = recordingApp()
    mounted.app.route('/api', router)

    expect(await policyFor(mounted.app, mounted.policies, 'GET', '/api/things/7')).toEqual({})
  })

  it('is worked out once per request (the Request object) and then remembered', async () => {
    const first = recordingApp()
    first.app.get('/page', routePolicy({ edgeCached: true }), ok)
    const second = recordingApp()
    second.app.get('/page', routePolicy({ htmlPage: true }), ok)
    const request = new Request(`${BASE_URL}/page`)

    await (await first.app.fetch(request)).body?.cancel()
    await (await second.app.fetch(request)).body?.cancel()
    await (await second.app.fetch(new Request(request.url))).body?.cancel()

    expect(first.policies).toEqual([{ edgeCached: true }])
    // The same Request again: the answer worked out for it the first time. A new Request: its own.
    expect(second.policies[0]).toBe(first.policies[0])
    expect(second.policies[1]).toEqual({ htmlPage: true })
  })
})
