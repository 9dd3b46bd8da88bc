import { describe, expect, it } from 'vitest'
import { d1SessionStart } from './bindings'
import { declaredPolicy } from './route-policy'
import { authRouter } from '../routes/auth/auth.index'
import { api, registerAndLogin } from '../../test/helpers'

describe('D1 read replication (Sessions API)', () => {
  it('returns a bookmark after a write and accepts it back on the next read, which sees the write', async () => {
    const { user, tokens } = await registerAndLogin()
    const created = await api(
      'POST',
      '/posts',
      { title: 'replica check', body: 'read your writes' },
      tokens.access_token,
    )
    expect(created.status).toBe(201)
    const bookmark = created.headers.get('x-d1-bookmark')
    expect(bookmark).toMatch(/^[0-9a-f]+(-[0-9a-f]+)+$/i)
    const { id } = (await created.json()) as { id: number }

    const read = await api('GET', `/posts?author=${user.id}`, undefined, undefined, { 'x-d1-bookmark': bookmark! })
    expect(read.status).toBe(200)
    expect(((await read.json()) as { results: { id: number }[] }).results.map((post) => post.id)).toContain(id)
    expect(read.headers.get('x-d1-bookmark')).toMatch(/^[0-9a-f]+(-[0-9a-f]+)+$/i)
  })

  it('ignores a malformed bookmark instead of failing the request', async () => {
    const res = await api('GET', '/posts', undefined, undefined, { 'x-d1-bookmark': "'; drop table posts; --" })
    expect(res.status).toBe(200)
  })

  it('starts writes and routes that declare d1Primary at the primary; other reads, signed in or not, at the bookmark or anywhere', () => {
    const bookmark = '0000000000000001-00000002-00004f3c-6c0f5f4e0c5e6ba14a43b0ab1f8e8b20'
    // Whether a route needs the primary is declared at the route (routePolicy d1Primary); every
    // /auth route declares it.
    const routeNeedsPrimary = (path: string) =>
      path.startsWith('/api/v1/auth/') &&
      authRouter.routes.some(
        (route) => `/api/v1/auth${route.path}` === path && declaredPolicy(route.handler)?.d1Primary === true,
      )
    const anonymous = (method: string, path: string, sent?: string) =>
      d1SessionStart({ method, routeNeedsPrimary: routeNeedsPrimary(path), bookmark: sent })
    expect(anonymous('POST', '/api/v1/posts', bookmark)).toBe('first-primary')
    expect(anonymous('DELETE', '/api/v1/posts/1')).toBe('first-primary')
    expect(anonymous('GET', '/api/v1/auth/token/verify', bookmark)).toBe('first-primary')
    // Signed-in reads are not special: /users/me reads at the client's bookmark, or a replica.
    expect(d1SessionStart({ method: 'GET', routeNeedsPrimary: false, bookmark })).toBe(bookmark)
    expect(anonymous('GET', '/api/v1/posts/1', bookmark)).toBe(bookmark)
    expect(anonymous('GET', '/api/v1/posts')).toBe('first-unconstrained')
    expect(anonymous('GET', '/api/v1/posts', 'not a bookmark')).toBe('first-unconstrained')
    // Login reads the account where reads go, and re-checks it at the primary in its write.
    const login = (sent?: string) =>
      d1SessionStart({ method: 'POST', routeNeedsPrimary: true, routeReadsFirstAtReplica: true, bookmark: sent })
    expect(login(bookmark)).toBe(bookmark)
    expect(login()).toBe('first-unconstrained')
    expect(login('not a bookmark')).toBe('first-unconstrained')
  })

  it('every /auth route declares that its D1 session starts at the primary', () => {
    const handlers = authRouter.routes.filter((route) => route.method !== 'ALL')
    const paths = new Set(handlers.map((route) => `${route.method} ${route.path}`))
    const declared = new Set(
      handlers
        .filter((route) => declaredPolicy(route.handler)?.d1Primary === true)
        .map((route) => `${route.method} ${route.path}`),
    )
    expect(paths.size).toBeGreaterThanOrEqual(12)
    expect([...paths].filter((route) => !declared.has(route))).toEqual([])
  })
})
