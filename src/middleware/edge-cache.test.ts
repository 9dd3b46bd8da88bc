import { env } from 'cloudflare:workers'
import { Hono } from 'hono'
import { requestId } from 'hono/request-id'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { edgeCache } from './edge-cache'
import { routePolicy } from './route-policy'
import type { AppEnv } from '../router'
import { BASE_URL, api, apiWithEnv, registerAdmin, registerAndLogin, uniqueName } from '../../test/helpers'
import type { RegisteredUser } from '../../test/helpers'

// The edge cache (src/middleware/edge-cache.ts) serves anonymous GETs of posts and profiles from
// the Cache API; X-Edge-Cache says MISS (stored) or HIT (served from the cache). A write through
// the API must make the next read fresh (docs/API.md § Caching).

// The console mail transport prints every verification and subscription email; nothing here reads it.
beforeEach(() => {
  vi.spyOn(console, 'log').mockImplementation(() => undefined)
})

afterEach(() => {
  vi.restoreAllMocks()
})

interface Post {
  id: number
  title: string
  body: string
  author: { id: number; username: string }
}

interface Page<T> {
  results: T[]
  next: string | null
}

async function author(): Promise<{ user: RegisteredUser; token: string }> {
  const { user, tokens } = await registerAndLogin()
  return { user, token: tokens.access_token }
}

async function createPost(token: string, title = uniqueName('title')): Promise<Post> {
  const res = await api('POST', '/posts', { title, body: 'Cached at the edge.' }, token)
  expect(res.status).toBe(201)
  return (await res.json()) as Post
}

function anonymousGet(path: string, headers: Record<string, string> = {}): Promise<Response> {
  return api('GET', path, undefined, undefined, headers)
}

function requestIdFor(label: string): string {
  return `${label}-${crypto.randomUUID()}`
}

/** Reads `path` anonymously twice: the first read fills the cache, the second is served from it. */
async function warm(path: string): Promise<Response> {
  const miss = await anonymousGet(path)
  expect(miss.status).toBe(200)
  expect(miss.headers.get('x-edge-cache')).toBe('MISS')
  await miss.body?.cancel()
  const hit = await anonymousGet(path)
  expect(hit.headers.get('x-edge-cache')).toBe('HIT')
  return hit
}

/** Changes a post's title in D1 behind the API's back, so the edge cache is not told. */
async function retitleInD1(postId: number, title: string): Promise<void> {
  await env.DB.prepare('UPDATE posts SET title = ? WHERE id = ?').bind(title, postId).run()
}

describe('anonymous GET of a public resource', () => {
  it('is stored on the first read and served from the edge cache on the second, same body and ETag', async () => {
    const { token } = await author()
    const post = await createPost(token)
    const firstId = requestIdFor('edge-first')
    const secondId = requestIdFor('edge-second')

    const miss = await anonymousGet(`/posts/${post.id}`, { 'x-request-id': firstId })
    const hit = await anonymousGet(`/posts/${post.id}`, { 'x-request-id': secondId })

    expect(miss.status).toBe(200)
    expect(miss.headers.get('x-edge-cache')).toBe('MISS')
    expect(hit.status).toBe(200)
    expect(hit.headers.get('x-edge-cache')).toBe('HIT')
    const etag = miss.headers.get('etag')
    expect(etag).toMatch(/^"[^"]+"$/)
    expect(hit.headers.get('etag')).toBe(etag)
    expect(hit.headers.get('content-type')).toBe(miss.headers.get('content-type'))
    const body = await miss.text()
    expect(await hit.text()).toBe(body)
    expect(JSON.parse(body)).toMatchObject({ id: post.id, title: post.title })
  })

  it('tells the client to revalidate (public, no-cache), never the edge TTL', async () => {
    const { token } = await author()
    const post = await createPost(token)

    const miss = await anonymousGet(`/posts/${post.id}`)
    const hit = await anonymousGet(`/posts/${post.id}`)

    expect([miss.headers.get('x-edge-cache'), hit.headers.get('x-edge-cache')]).toEqual(['MISS', 'HIT'])
    for (const res of [miss, hit]) {
      expect(res.headers.get('cache-control')).toBe('public, no-cache')
      expect(res.headers.get('cache-control')).not.toContain('s-maxage')
    }
  })

  it("answers a HIT with the current request's X-Request-Id, not the one that filled the cache", async () => {
    const { token } = await author()
    const post = await createPost(token)
    const ids = [requestIdFor('fill'), requestIdFor('hit-one'), requestIdFor('hit-two')]

    const responses = []
    for (const id of ids) responses.push(await anonymousGet(`/posts/${post.id}`, { 'x-request-id': id }))

    expect(responses.map((res) => res.headers.get('x-edge-cache'))).toEqual(['MISS', 'HIT', 'HIT'])
    expect(responses.map((res) => res.headers.get('x-request-id'))).toEqual(ids)
  })

  it('answers If-None-Match with the ETag on a HIT with 304 and no body', async () => {
    const { token } = await author()
    const post = await createPost(token)
    const miss = await anonymousGet(`/posts/${post.id}`)
    const etag = miss.headers.get('etag')!
    await miss.body?.cancel()

    const notModified = await anonymousGet(`/posts/${post.id}`, { 'if-none-match': etag })

    expect(notModified.status).toBe(304)
    expect(notModified.headers.get('x-edge-cache')).toBe('HIT')
    expect(notModified.headers.get('etag')).toBe(etag)
    expect(await notModified.text()).toBe('')

    const otherTag = await anonymousGet(`/posts/${post.id}`, { 'if-none-match': '"something-else"' })
    expect(otherTag.status).toBe(200)
    expect(otherTag.headers.get('x-edge-cache')).toBe('HIT')
    expect(((await otherTag.json()) as Post).id).toBe(post.id)
  })

  it('caches the post list, the user list, profiles and per-user post lists as well', async () => {
    const { user, token } = await author()
    await createPost(token)

    for (const path of [`/posts?author=${user.id}`, '/users?limit=5', `/users/${user.id}`, `/users/${user.id}/posts`]) {
      const hit = await warm(path)
      expect(hit.status, path).toBe(200)
    }
  })
})

describe('no stale read after a write', () => {
  it('serves the new title on the first anonymous read after a PATCH by the author', async () => {
    const { token } = await author()
    const post = await createPost(token)
    const before = await warm(`/posts/${post.id}`)
    const oldEtag = before.headers.get('etag')

    const newTitle = uniqueName('patched')
    const patched = await api('PATCH', `/posts/${post.id}`, { title: newTitle }, token)
    expect(patched.status).toBe(200)

    const after = await anonymousGet(`/posts/${post.id}`)
    expect(after.status).toBe(200)
    expect(after.headers.get('x-edge-cache')).toBe('MISS')
    expect(after.headers.get('etag')).not.toBe(oldEtag)
    expect(((await after.json()) as Post).title).toBe(newTitle)
  })

  it('serves the new title after a PUT', async () => {
    const { token } = await author()
    const post = await createPost(token)
    await warm(`/posts/${post.id}`)

    const newTitle = uniqueName('replaced')
    const replaced = await api('PUT', `/posts/${post.id}`, { title: newTitle, body: 'Replaced.' }, token)
    expect(replaced.status).toBe(200)

    const after = await anonymousGet(`/posts/${post.id}`)
    expect(await after.json()).toMatchObject({ title: newTitle, body: 'Replaced.' })
  })

  it('lists a new post of the author at once, and drops a deleted one at once', async () => {
    const { user, token } = await author()
    const first = await createPost(token)
    const listPath = `/posts?author=${user.id}`
    const cached = (await (await warm(listPath)).json()) as Page<Post>
    expect(cached.results.map((p) => p.id)).toEqual([first.id])

    const second = await createPost(token)
    const afterCreate = await anonymousGet(listPath)
    expect(afterCreate.headers.get('x-edge-cache')).toBe('MISS')
    expect(((await afterCreate.json()) as Page<Post>).results.map((p) => p.id)).toEqual([second.id, first.id])
    expect((await anonymousGet(listPath)).headers.get('x-edge-cache')).toBe('HIT')
    await warm(`/posts/${first.id}`)

    const deleted = await api('DELETE', `/posts/${first.id}`, undefined, token)
    expect(deleted.status).toBe(204)
    const afterDelete = await anonymousGet(listPath)
    expect(((await afterDelete.json()) as Page<Post>).results.map((p) => p.id)).toEqual([second.id])
    const gone = await anonymousGet(`/posts/${first.id}`)
    expect(gone.status).toBe(404)
  })

  it("shows a new username on the profile, the author's posts and the per-user post list after PATCH /users/me", async () => {
    const { user, token } = await author()
    const post = await createPost(token)
    for (const path of [
      `/users/${user.id}`,
      `/posts/${post.id}`,
      `/users/${user.id}/posts`,
      `/posts?author=${user.id}`,
    ]) {
      await warm(path)
    }

    const newName = uniqueName('renamed')
    const renamed = await api('PATCH', '/users/me', { username: newName }, token)
    expect(renamed.status).toBe(200)

    const profile = await anonymousGet(`/users/${user.id}`)
    expect(((await profile.json()) as { username: string }).username).toBe(newName)
    const single = await anonymousGet(`/posts/${post.id}`)
    expect(((await single.json()) as Post).author).toEqual({ id: user.id, username: newName })
    const ofUser = await anonymousGet(`/users/${user.id}/posts`)
    expect(((await ofUser.json()) as Page<Post>).results[0]?.author.username).toBe(newName)
    const byAuthor = await anonymousGet(`/posts?author=${user.id}`)
    expect(((await byAuthor.json()) as Page<Post>).results[0]?.author.username).toBe(newName)
  })

  it('lists a newly registered user at once', async () => {
    await warm('/users?limit=100')

    const { user } = await author()
    const res = await anonymousGet('/users?limit=100')
    expect(res.headers.get('x-edge-cache')).toBe('MISS')
    // The list is oldest first and other tests register users too: the new one is on the last page.
    const ids: number[] = []
    for (let page = (await res.json()) as Page<{ id: number }>; ; ) {
      ids.push(...page.results.map((u) => u.id))
      if (page.next === null) break
      page = (await (await anonymousGet(page.next.slice(BASE_URL.length + '/api/v1'.length))).json()) as Page<{
        id: number
      }>
    }
    expect(ids).toContain(user.id)
  })
})

describe('what is never cached', () => {
  it('requests with Authorization are neither served from the cache nor stored in it', async () => {
    const { token } = await author()
    const post = await createPost(token)
    await warm(`/posts/${post.id}`)
    const newTitle = uniqueName('behind-the-cache')
    await retitleInD1(post.id, newTitle)

    // The anonymous copy is still cached (the API saw no write)…
    const stale = await anonymousGet(`/posts/${post.id}`)
    expect(stale.headers.get('x-edge-cache')).toBe('HIT')
    expect(((await stale.json()) as Post).title).toBe(post.title)
    // …but a request with credentials goes to D1, whatever the credential (a bad one is checked
    // there: posts show their author more, so credentials on them are verified).
    for (const authorization of [`Bearer ${token}`, `JWT ${token}`]) {
      const fresh = await anonymousGet(`/posts/${post.id}`, { authorization })
      expect(fresh.status, authorization).toBe(200)
      expect(fresh.headers.get('x-edge-cache'), authorization).toBeNull()
      expect(((await fresh.json()) as Post).title, authorization).toBe(newTitle)
    }
    const refused = await anonymousGet(`/posts/${post.id}`, { authorization: 'Bearer not-a-token' })
    expect(refused.status).toBe(401)
    expect(refused.headers.get('x-edge-cache')).toBeNull()
    await refused.body?.cancel()
  })

  it('a read with Authorization does not fill the cache for anonymous readers', async () => {
    const { token } = await author()
    const post = await createPost(token)

    for (let i = 0; i < 2; i += 1) {
      const authed = await api('GET', `/posts/${post.id}`, undefined, token)
      expect(authed.status).toBe(200)
      expect(authed.headers.get('x-edge-cache')).toBeNull()
      await authed.body?.cancel()
    }
    const anonymous = await anonymousGet(`/posts/${post.id}`)
    expect(anonymous.headers.get('x-edge-cache')).toBe('MISS')
  })

  it('requests with the cookie-mode session cookie bypass the cache', async () => {
    const { token } = await author()
    const post = await createPost(token)
    await warm(`/posts/${post.id}`)

    const withCookie = await anonymousGet(`/posts/${post.id}`, { cookie: `__Host-edgepress-access=${token}` })
    expect(withCookie.status).toBe(200)
    expect(withCookie.headers.get('x-edge-cache')).toBeNull()
  })

  it('GET /users/me is never cached', async () => {
    const { user, token } = await author()

    for (let i = 0; i < 2; i += 1) {
      const me = await api('GET', '/users/me', undefined, token)
      expect(me.status).toBe(200)
      expect(me.headers.get('x-edge-cache')).toBeNull()
      expect(me.headers.get('cache-control')).toBe('private, no-store')
      expect(((await me.json()) as { email: string }).email).toBe(user.email)
    }
    const anonymous = await anonymousGet('/users/me')
    expect(anonymous.status).toBe(401)
    expect(anonymous.headers.get('x-edge-cache')).toBeNull()
  })

  it('a response that sets a cookie is never stored', async () => {
    // No public route sets a cookie today, so the middleware is mounted on a route that does,
    // next to one that does not (the control).
    let handled = 0
    const app = new Hono<AppEnv>()
    app.use(requestId())
    app.use(edgeCache())
    app.get('/api/v1/posts/:id', routePolicy({ edgeCached: true }), (c) => {
      handled += 1
      if (c.req.param('id').startsWith('cookie-')) c.header('Set-Cookie', 'tracking=1; Path=/; Secure')
      return c.json({ id: c.req.param('id'), handled }, 200)
    })
    const withCookie = `https://edgepress.test/api/v1/posts/cookie-${crypto.randomUUID()}`
    const without = `https://edgepress.test/api/v1/posts/plain-${crypto.randomUUID()}`

    const cookieResponses = [await app.request(withCookie), await app.request(withCookie)]
    expect(cookieResponses.map((res) => res.headers.get('set-cookie'))).toEqual([
      'tracking=1; Path=/; Secure',
      'tracking=1; Path=/; Secure',
    ])
    expect(cookieResponses.map((res) => res.headers.get('x-edge-cache'))).toEqual([null, null])
    expect(handled).toBe(2)

    const plainResponses = [await app.request(without), await app.request(without)]
    expect(plainResponses.map((res) => res.headers.get('x-edge-cache'))).toEqual(['MISS', 'HIT'])
    expect(handled).toBe(3)
  })

  it('subscriber endpoints are not cached', async () => {
    const { tokens } = await registerAdmin()
    const email = `${uniqueName('subscriber')}@example.com`
    const subscribed = await api('POST', '/subscribers', { email })
    expect(subscribed.status).toBe(202)
    expect(subscribed.headers.get('x-edge-cache')).toBeNull()

    const anonymous = await anonymousGet('/subscribers')
    expect(anonymous.status).toBe(401)
    expect(anonymous.headers.get('x-edge-cache')).toBeNull()
    for (let i = 0; i < 2; i += 1) {
      const list = await api('GET', `/subscribers?q=${encodeURIComponent(email)}`, undefined, tokens.access_token)
      expect(list.status).toBe(200)
      expect(list.headers.get('x-edge-cache')).toBeNull()
      expect(list.headers.get('cache-control')).toBe('private, no-store')
      expect(((await list.json()) as Page<{ email: string }>).results.map((s) => s.email)).toEqual([email])
    }
  })

  it('a 404 is not cached: the resource appearing later is served at once', async () => {
    const { token } = await author()
    const post = await createPost(token)
    const row = await env.DB.prepare('SELECT * FROM posts WHERE id = ?').bind(post.id).first<Record<string, unknown>>()
    // Removed and restored behind the API's back, so no write purges the cache in between.
    await env.DB.prepare('DELETE FROM posts WHERE id = ?').bind(post.id).run()

    for (let i = 0; i < 2; i += 1) {
      const missing = await anonymousGet(`/posts/${post.id}`)
      expect(missing.status).toBe(404)
      expect(missing.headers.get('x-edge-cache')).toBeNull()
      await missing.body?.cancel()
    }

    await env.DB.prepare(
      'INSERT INTO posts (id, author_id, title, body, slug, published_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    )
      .bind(
        row!.id,
        row!.author_id,
        row!.title,
        row!.body,
        row!.slug,
        row!.published_at,
        row!.created_at,
        row!.updated_at,
      )
      .run()
    const found = await anonymousGet(`/posts/${post.id}`)
    expect(found.status).toBe(200)
    expect(found.headers.get('x-edge-cache')).toBe('MISS')
  })

  it('unknown users answer 404 without touching the cache', async () => {
    const missing = await anonymousGet('/users/987654321')
    expect(missing.status).toBe(404)
    expect(missing.headers.get('x-edge-cache')).toBeNull()
  })
})

describe('with read replication, the read that refills the cache after a write sees that write', () => {
  it('starts its D1 session at the bookmark of the write that purged the cache', async ({ expect }) => {
    const constraints: (string | undefined)[] = []
    const recordingDb = new Proxy(env.DB, {
      get(target, property) {
        if (property === 'withSession') {
          return (constraint?: string) => {
            constraints.push(constraint)
            return target.withSession(constraint)
          }
        }
        const value = Reflect.get(target, property, target) as unknown
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    })
    const recording = { ...env, DB: recordingDb }
    const { token } = await author()

    const created = await apiWithEnv(recording, 'POST', '/posts', { title: uniqueName('replicated'), body: 'b' }, token)
    expect(created.status).toBe(201)
    const writeBookmark = created.headers.get('x-d1-bookmark')
    expect(writeBookmark).toMatch(/^[0-9a-f]+(-[0-9a-f]+)+$/i)

    constraints.length = 0
    const refill = await apiWithEnv(recording, 'GET', '/posts?limit=3')
    expect(refill.status).toBe(200)
    expect(refill.headers.get('x-edge-cache')).toBe('MISS')
    expect(constraints).toEqual([writeBookmark])

    // Served from the cache now: no D1 session at all.
    constraints.length = 0
    expect((await apiWithEnv(recording, 'GET', '/posts?limit=3')).headers.get('x-edge-cache')).toBe('HIT')
    expect(constraints).toEqual([])
  })
})
