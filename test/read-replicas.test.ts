import { describe, expect, it } from 'vitest'
import { sessionStart } from '../src/middleware/context'
import { api, registerAndLogin } from './helpers'

describe('D1 read replication (Sessions API)', () => {
  it('returns a bookmark after a write and accepts it back on the next read, which sees the write', async () => {
    const { user, tokens } = await registerAndLogin()
    const created = await api('POST', '/posts', { title: 'replica check', body: 'read your writes' }, tokens.access_token)
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

  it('starts writes, auth and authenticated requests at the primary; anonymous reads at the bookmark or anywhere', () => {
    const bookmark = '0000000000000001-00000002-00004f3c-6c0f5f4e0c5e6ba14a43b0ab1f8e8b20'
    const anonymous = (method: string, path: string, sent?: string) =>
      sessionStart({ method, path, authenticated: false, bookmark: sent })
    expect(anonymous('POST', '/api/v1/posts', bookmark)).toBe('first-primary')
    expect(anonymous('DELETE', '/api/v1/posts/1')).toBe('first-primary')
    expect(anonymous('GET', '/api/v1/auth/token/verify', bookmark)).toBe('first-primary')
    expect(sessionStart({ method: 'GET', path: '/api/v1/users/me', authenticated: true, bookmark })).toBe('first-primary')
    expect(anonymous('GET', '/api/v1/posts/1', bookmark)).toBe(bookmark)
    expect(anonymous('GET', '/api/v1/posts')).toBe('first-unconstrained')
    expect(anonymous('GET', '/api/v1/posts', 'not a bookmark')).toBe('first-unconstrained')
  })
})
