import { env } from 'cloudflare:workers'
import { describe, it } from 'vitest'
import {
  api,
  apiWithEnv,
  expectProblem,
  login,
  makeAdmin,
  mintToken,
  outboxMessagesTo,
  registerAdmin,
  registerAndLogin,
  registerUser,
  tokenFromEmail,
  uniqueName,
} from '../../../test/helpers'

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const PRIVATE_VIEW_KEYS = [
  'created_at',
  'email',
  'email_verified',
  'id',
  'is_admin',
  'last_login_at',
  'mfa_enabled',
  'passkeys',
  'providers',
  'username',
]

function me(headers: Record<string, string> = {}): Promise<Response> {
  return api('GET', '/users/me', undefined, undefined, headers)
}

describe('GET /api/v1/users/me', () => {
  it('returns the private view, never cached', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await me({ authorization: `Bearer ${tokens.access_token}` })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(res.headers.get('cache-control')).toContain('no-store')
    const text = await res.text()
    const body = JSON.parse(text) as Record<string, unknown>
    expect(Object.keys(body).sort()).toEqual(PRIVATE_VIEW_KEYS)
    expect(body).toMatchObject({
      providers: [],
      passkeys: 0,
      id: user.id,
      username: user.username,
      email: user.email,
      email_verified: false,
      is_admin: false,
    })
    expect(body.created_at).toMatch(ISO_UTC)
    expect(body.last_login_at).toMatch(ISO_UTC)
    expect(text).not.toContain(user.password)
    expect(text).not.toMatch(/password|hash|pbkdf2/i)
  })

  it.for([
    ['JWT', 'JWT'],
    ['lower-case bearer', 'bearer'],
    ['upper-case JWT', 'jwt'],
  ] as const)('accepts the %s scheme', async ([, scheme], { expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await me({ authorization: `${scheme} ${tokens.access_token}` })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id })
  })

  it('accepts a token minted elsewhere with the configured key for an existing user', async ({ expect }) => {
    const user = await registerUser()
    const token = await mintToken({ sub: String(user.id) })
    const res = await me({ authorization: `Bearer ${token}` })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username: user.username, last_login_at: null })
  })

  it('answers 401 not_authenticated with a challenge when no token is sent', async ({ expect }) => {
    const res = await me()
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })

  it('answers 401 to a valid token whose subject names no user', async ({ expect }) => {
    const token = await mintToken({ sub: '987654321' })
    const res = await me({ authorization: `Bearer ${token}` })
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="api"/)
    const problem = await expectProblem(res, 401, 'token_invalid')
    expect(problem).not.toHaveProperty('errors')
  })

  it('answers 401 token_invalid to a refresh token', async () => {
    const { tokens } = await registerAndLogin()
    await expectProblem(await me({ authorization: `Bearer ${tokens.refresh_token}` }), 401, 'token_invalid')
  })

  it('answers 401 token_expired to an expired token', async () => {
    const user = await registerUser()
    const now = Math.floor(Date.now() / 1000)
    const token = await mintToken({ sub: String(user.id), iat: now - 1000, nbf: now - 1000, exp: now - 600 })
    await expectProblem(await me({ authorization: `Bearer ${token}` }), 401, 'token_expired')
  })
})

interface PublicUser {
  id: number
  username: string
  created_at: string
}

interface Page<T> {
  results: T[]
  next: string | null
  previous: string | null
}

interface PrivateUser extends PublicUser {
  email: string
  email_verified: boolean
  is_admin: boolean
  last_login_at: string | null
}

interface PostView {
  id: number
  title: string
  author: { id: number; username: string }
}

/** Absolute `next`/`previous` URL → the path api() takes. */
function pathOf(url: string): string {
  const { pathname, search } = new URL(url)
  return `${pathname}${search}`
}

async function privateViewOf(accessToken: string): Promise<PrivateUser> {
  const res = await api('GET', '/users/me', undefined, accessToken)
  if (res.status !== 200) throw new Error(`GET /users/me failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PrivateUser
}

async function createPost(accessToken: string, title: string): Promise<PostView> {
  const res = await api('POST', '/posts', { title, body: `Body of ${title}` }, accessToken)
  if (res.status !== 201) throw new Error(`POST /posts failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

function patchMe(body: unknown, accessToken?: string): Promise<Response> {
  return api('PATCH', '/users/me', body, accessToken)
}

function refresh(refreshToken: string): Promise<Response> {
  return api('POST', '/auth/token/refresh', { refresh_token: refreshToken })
}

describe('GET /api/v1/users', () => {
  it('lists public profiles only, with Cache-Control', async ({ expect }) => {
    const user = await registerUser()
    await makeAdmin((await registerUser()).id)
    // Oldest first, and other tests register users too: the newest are on the last page.
    const profiles: Record<string, unknown>[] = []
    for (let path: string | null = '/users?limit=100'; path !== null; ) {
      const res = await api('GET', path)
      expect(res.status).toBe(200)
      expect(res.headers.get('cache-control')).toEqual(expect.any(String))
      expect(res.headers.get('cache-control')).not.toMatch(/private|no-store/)
      const text = await res.text()
      expect(text).not.toContain(user.email)
      expect(text).not.toMatch(/email|is_admin|password|hash|pbkdf2/i)
      const page = JSON.parse(text) as Page<Record<string, unknown>>
      profiles.push(...page.results)
      path = page.next === null ? null : page.next.slice(page.next.indexOf('/users'))
    }
    expect(profiles.length).toBeGreaterThanOrEqual(2)
    for (const profile of profiles) {
      expect(Object.keys(profile).sort()).toEqual(['created_at', 'id', 'username'])
      expect(profile.created_at).toMatch(ISO_UTC)
    }
    expect(profiles).toContainEqual({
      id: user.id,
      username: user.username,
      created_at: expect.stringMatching(ISO_UTC),
    })
  })

  it('walks every profile once with limit=2, following next', async ({ expect }) => {
    const created: number[] = []
    for (let i = 0; i < 5; i += 1) created.push((await registerUser()).id)

    const seen: number[] = []
    let path: string | null = '/users?limit=2'
    let pages = 0
    while (path !== null) {
      const res = await api('GET', path)
      expect(res.status).toBe(200)
      const page = (await res.json()) as Page<PublicUser>
      expect(page.results.length).toBeGreaterThan(0)
      expect(page.results.length).toBeLessThanOrEqual(2)
      if (pages > 0) expect(page.previous).toEqual(expect.stringMatching(/^https?:\/\//))
      seen.push(...page.results.map((profile) => profile.id))
      if (page.next !== null) expect(page.next).toMatch(/^https?:\/\/[^/]+\/api\/v1\/users\?/)
      path = page.next === null ? null : pathOf(page.next)
      pages += 1
      if (pages > 1000) throw new Error('pagination does not end')
    }

    expect(new Set(seen).size).toBe(seen.length)
    for (const id of created) expect(seen.filter((seenId) => seenId === id)).toHaveLength(1)
    // Oldest first: the five new users appear in registration order.
    expect(seen.filter((id) => created.includes(id))).toEqual(created)
  })

  it('answers 400 naming limit when limit is over 100', async ({ expect }) => {
    const problem = await expectProblem(await api('GET', '/users?limit=101'), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('limit')
  })
})

describe('GET /api/v1/users/{id}', () => {
  it('returns the public profile with a strong ETag and Cache-Control', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('GET', `/users/${user.id}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toEqual(expect.any(String))
    expect(res.headers.get('etag')).toMatch(/^"[^"]+"$/)
    const text = await res.text()
    const body = JSON.parse(text) as Record<string, unknown>
    expect(Object.keys(body).sort()).toEqual(['created_at', 'id', 'username'])
    expect(body).toMatchObject({ id: user.id, username: user.username })
    expect(body.created_at).toMatch(ISO_UTC)
    expect(text).not.toContain(user.email)
  })

  it('answers 304 with no body to If-None-Match with its ETag', async ({ expect }) => {
    const user = await registerUser()
    const first = await api('GET', `/users/${user.id}`)
    const etag = first.headers.get('etag')!
    expect(etag).toMatch(/^"[^"]+"$/)
    const res = await api('GET', `/users/${user.id}`, undefined, undefined, { 'if-none-match': etag })
    expect(res.status).toBe(304)
    expect(await res.text()).toBe('')
    expect(res.headers.get('etag')).toBe(etag)
  })

  it('changes its ETag after a write, so the next read is fresh', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const etag = (await api('GET', `/users/${user.id}`)).headers.get('etag')!
    const renamed = uniqueName('renamed')
    expect((await patchMe({ username: renamed }, tokens.access_token)).status).toBe(200)
    const res = await api('GET', `/users/${user.id}`, undefined, undefined, { 'if-none-match': etag })
    expect(res.status).toBe(200)
    expect(res.headers.get('etag')).not.toBe(etag)
    expect(await res.json()).toMatchObject({ id: user.id, username: renamed })
  })

  it.for(['987654321', 'abc'])('answers 404 not_found for id %s', async (id) => {
    await expectProblem(await api('GET', `/users/${id}`), 404, 'not_found')
  })
})

describe('PATCH /api/v1/users/me', () => {
  it('changes the username and returns the private view', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const renamed = uniqueName('renamed')
    const res = await patchMe({ username: renamed }, tokens.access_token)
    expect(res.status).toBe(200)
    const body = (await res.json()) as PrivateUser
    expect(Object.keys(body).sort()).toEqual(PRIVATE_VIEW_KEYS)
    expect(body).toMatchObject({ id: user.id, username: renamed, email: user.email })
    expect(await privateViewOf(tokens.access_token)).toMatchObject({ username: renamed })
    expect((await login({ username: renamed, password: user.password })).access_token).toEqual(expect.any(String))
  })

  it('makes a new email unverified again and sends a verification link to the new address', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const firstToken = await tokenFromEmail(user.email, 'verify-email')
    expect((await api('POST', '/auth/email/verify', { token: firstToken })).status).toBe(204)
    expect(await privateViewOf(tokens.access_token)).toMatchObject({ email_verified: true })

    const newEmail = `${uniqueName('moved')}@example.org`
    const res = await patchMe({ email: newEmail }, tokens.access_token)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, email: newEmail, email_verified: false })
    expect(await privateViewOf(tokens.access_token)).toMatchObject({ email: newEmail, email_verified: false })

    const sent = await outboxMessagesTo(newEmail)
    expect(sent).toHaveLength(1)
    expect(sent[0]!.text).toContain('/verify-email?token=')
    const newToken = await tokenFromEmail(newEmail, 'verify-email')
    expect(newToken).not.toBe(firstToken)
    expect((await api('POST', '/auth/email/verify', { token: newToken })).status).toBe(204)
    expect(await privateViewOf(tokens.access_token)).toMatchObject({ email: newEmail, email_verified: true })
  })

  it("answers 409 username_taken for another user's username in a different case and changes nothing", async ({
    expect,
  }) => {
    const other = await registerUser()
    const { user, tokens } = await registerAndLogin()
    const before = await privateViewOf(tokens.access_token)
    const res = await patchMe(
      { username: other.username.toUpperCase(), email: `${uniqueName()}@example.com` },
      tokens.access_token,
    )
    await expectProblem(res, 409, 'username_taken')
    expect(await privateViewOf(tokens.access_token)).toEqual(before)
    expect(before).toMatchObject({ username: user.username, email: user.email })
  })

  it("answers 409 email_taken for another user's email in a different case and changes nothing", async ({ expect }) => {
    const other = await registerUser()
    const { user, tokens } = await registerAndLogin()
    const before = await privateViewOf(tokens.access_token)
    const res = await patchMe({ email: other.email.toUpperCase() }, tokens.access_token)
    await expectProblem(res, 409, 'email_taken')
    expect(await privateViewOf(tokens.access_token)).toEqual(before)
    expect(before).toMatchObject({ email: user.email })
    expect(await outboxMessagesTo(other.email)).toHaveLength(1)
  })

  it('answers 400 naming email for an invalid email', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const problem = await expectProblem(
      await patchMe({ email: 'not-an-email' }, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((e) => e.path)).toContain('email')
    expect(await privateViewOf(tokens.access_token)).toMatchObject({ email: user.email })
  })

  it('answers 401 not_authenticated without a token', async () => {
    await expectProblem(await patchMe({ username: uniqueName() }), 401, 'not_authenticated')
  })

  it.for([
    ['unicode', 'Zoë_名前_😀'],
    ['SQL metacharacters', `Robert');DROP_TABLE_users;--'"%_`],
  ] as const)('round-trips a username with %s', async ([, prefix], { expect }) => {
    const { user, tokens } = await registerAndLogin()
    const username = `${prefix}${uniqueName('')}`
    const res = await patchMe({ username }, tokens.access_token)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ username })
    expect(await privateViewOf(tokens.access_token)).toMatchObject({ username })
    expect(await (await api('GET', `/users/${user.id}`)).json()).toMatchObject({ id: user.id, username })
    expect((await api('GET', '/users?limit=1')).status).toBe(200)
  })
})

describe('DELETE /api/v1/users/me', () => {
  it('answers 401 invalid_credentials to a wrong password and deletes nothing', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const post = await createPost(tokens.access_token, 'Still here')
    await expectProblem(
      await api('DELETE', '/users/me', { password: 'not the password' }, tokens.access_token),
      401,
      'invalid_credentials',
    )
    expect((await api('GET', `/users/${user.id}`)).status).toBe(200)
    expect((await api('GET', `/posts/${post.id}`)).status).toBe(200)
    expect((await api('GET', '/users/me', undefined, tokens.access_token)).status).toBe(200)
    expect((await login(user)).access_token).toEqual(expect.any(String))
  })

  it('answers 400 naming password when it is missing', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const problem = await expectProblem(
      await api('DELETE', '/users/me', {}, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((e) => e.path)).toContain('password')
    expect((await api('GET', `/users/${user.id}`)).status).toBe(200)
  })

  it('deletes the user and their posts; every token stops working', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const other = await login(user)
    const posts = [await createPost(tokens.access_token, 'First'), await createPost(tokens.access_token, 'Second')]
    const res = await api('DELETE', '/users/me', { password: user.password }, tokens.access_token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')

    await expectProblem(await api('GET', '/users/me', undefined, tokens.access_token), 401, 'token_revoked')
    expect((await api('GET', '/users/me', undefined, other.access_token)).status).toBe(401)
    await expectProblem(
      await api('POST', '/auth/token', { username: user.username, password: user.password }),
      401,
      'invalid_credentials',
    )
    for (const post of posts) await expectProblem(await api('GET', `/posts/${post.id}`), 404, 'not_found')
    await expectProblem(await api('GET', `/users/${user.id}`), 404, 'not_found')
    expect((await refresh(tokens.refresh_token)).status).toBe(401)
    expect((await refresh(other.refresh_token)).status).toBe(401)
  })
})

describe('PATCH, DELETE /api/v1/users/{id} (admin)', () => {
  it.for(['PATCH', 'DELETE'] as const)('%s answers 403 forbidden to a non-admin', async (method, { expect }) => {
    const target = await registerUser()
    const { tokens } = await registerAndLogin()
    const body = method === 'PATCH' ? { is_admin: true } : undefined
    await expectProblem(await api(method, `/users/${target.id}`, body, tokens.access_token), 403, 'forbidden')
    const after = await api('GET', `/users/${target.id}`)
    expect(after.status).toBe(200)
    expect((await login(target)).access_token).toEqual(expect.any(String))
  })

  it.for(['PATCH', 'DELETE'] as const)(
    '%s answers 401 not_authenticated without a token',
    async (method, { expect }) => {
      const target = await registerUser()
      const body = method === 'PATCH' ? { is_admin: true } : undefined
      const res = await api(method, `/users/${target.id}`, body)
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
      await expectProblem(res, 401, 'not_authenticated')
    },
  )

  it('PATCH lets an admin set is_admin, email_verified and username', async ({ expect }) => {
    const admin = await registerAdmin()
    const target = await registerAndLogin()
    const renamed = uniqueName('renamed')
    const res = await api(
      'PATCH',
      `/users/${target.user.id}`,
      { username: renamed, is_admin: true, email_verified: true },
      admin.tokens.access_token,
    )
    expect(res.status).toBe(200)
    const body = (await res.json()) as PrivateUser
    expect(Object.keys(body).sort()).toEqual(PRIVATE_VIEW_KEYS)
    expect(body).toMatchObject({
      id: target.user.id,
      username: renamed,
      email: target.user.email,
      is_admin: true,
      email_verified: true,
    })
    expect(await privateViewOf(target.tokens.access_token)).toMatchObject({
      username: renamed,
      is_admin: true,
      email_verified: true,
    })

    // The promoted user is now an administrator.
    const victim = await registerUser()
    const promoted = await api('PATCH', `/users/${victim.id}`, { email_verified: true }, target.tokens.access_token)
    expect(promoted.status).toBe(200)

    const demoted = await api('PATCH', `/users/${target.user.id}`, { is_admin: false }, admin.tokens.access_token)
    expect(await demoted.json()).toMatchObject({ is_admin: false, username: renamed, email_verified: true })
    await expectProblem(
      await api('PATCH', `/users/${victim.id}`, { email_verified: false }, target.tokens.access_token),
      403,
      'forbidden',
    )
  })

  it("DELETE lets an admin delete a user: 204 and the target's tokens stop working", async ({ expect }) => {
    const admin = await registerAdmin()
    const target = await registerAndLogin()
    const post = await createPost(target.tokens.access_token, 'Doomed')
    const res = await api('DELETE', `/users/${target.user.id}`, undefined, admin.tokens.access_token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
    expect((await api('GET', '/users/me', undefined, target.tokens.access_token)).status).toBe(401)
    expect((await refresh(target.tokens.refresh_token)).status).toBe(401)
    await expectProblem(await api('GET', `/users/${target.user.id}`), 404, 'not_found')
    await expectProblem(await api('GET', `/posts/${post.id}`), 404, 'not_found')
    expect((await api('GET', '/users/me', undefined, admin.tokens.access_token)).status).toBe(200)
  })

  it.for(['PATCH', 'DELETE'] as const)('%s answers 404 not_found for an unknown id', async (method) => {
    const admin = await registerAdmin()
    const body = method === 'PATCH' ? { email_verified: true } : undefined
    await expectProblem(await api(method, '/users/987654321', body, admin.tokens.access_token), 404, 'not_found')
    await expectProblem(await api(method, '/users/abc', body, admin.tokens.access_token), 404, 'not_found')
  })
})

describe('GET /api/v1/users/{id}/posts', () => {
  it("lists only that user's posts", async ({ expect }) => {
    const author = await registerAndLogin()
    const bystander = await registerAndLogin()
    const mine = [
      await createPost(author.tokens.access_token, 'Mine 1'),
      await createPost(author.tokens.access_token, 'Mine 2'),
    ]
    const theirs = await createPost(bystander.tokens.access_token, 'Theirs')

    const res = await api('GET', `/users/${author.user.id}/posts`)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toEqual(expect.any(String))
    const page = (await res.json()) as Page<PostView>
    expect(page.results.map((post) => post.id).sort()).toEqual(mine.map((post) => post.id).sort())
    expect(page.results.map((post) => post.id)).not.toContain(theirs.id)
    for (const post of page.results) expect(post.author).toEqual({ id: author.user.id, username: author.user.username })
    expect(page.next).toBeNull()
  })

  it('answers 404 not_found for an unknown user', async () => {
    await expectProblem(await api('GET', '/users/987654321/posts'), 404, 'not_found')
  })
})

/**
 * A D1 binding that demotes `userId` (is_admin = 0) right after the first read of a users row: an
 * admin's demotion landing between a request's read and its write.
 */
function demotingDb(real: D1Database, userId: number): D1Database {
  let armed = true
  const sqlOf = new WeakMap<object, string>()
  const originals = new WeakMap<object, D1PreparedStatement>()
  const readsUsers = (sql: string | undefined) => sql !== undefined && /^select .* from "users"/i.test(sql)
  const demoteOnce = async () => {
    if (!armed) return
    armed = false
    await real.prepare('UPDATE users SET is_admin = 0 WHERE id = ?').bind(userId).run()
  }
  const wrapStatement = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrapStatement(target.bind(...args), sql)
        if (typeof property === 'string' && ['all', 'raw', 'first'].includes(property) && readsUsers(sql)) {
          return async (...args: unknown[]) => {
            const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
            await demoteOnce()
            return result
          }
        }
        return (value as (...a: unknown[]) => unknown).bind(target)
      },
    })
    sqlOf.set(proxy, sql)
    originals.set(proxy, statement)
    return proxy
  }
  const wrap = (session: D1Database | D1DatabaseSession): D1Database =>
    new Proxy(session, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (property === 'prepare') return (sql: string) => wrapStatement(target.prepare(sql), sql)
        if (property === 'batch') {
          return async (statements: D1PreparedStatement[]) => {
            const result = await target.batch(statements.map((s) => originals.get(s) ?? s))
            if (statements.some((s) => readsUsers(sqlOf.get(s)))) await demoteOnce()
            return result
          }
        }
        if (property === 'withSession')
          return (constraint?: string) => wrap((target as D1Database).withSession(constraint))
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    }) as D1Database
  return wrap(real)
}

describe('PATCH /api/v1/users/me writes only what it changes', () => {
  it('does not restore admin rights revoked between its read and its write', async ({ expect }) => {
    const { user, tokens } = await registerAdmin()
    const renamed = uniqueName('renamed')
    const res = await apiWithEnv(
      { ...env, DB: demotingDb(env.DB, user.id) },
      'PATCH',
      '/users/me',
      { username: renamed },
      tokens.access_token,
    )
    expect(res.status).toBe(200)
    const row = await env.DB.prepare('SELECT username, is_admin FROM users WHERE id = ?')
      .bind(user.id)
      .first<{ username: string; is_admin: number }>()
    expect(row).toEqual({ username: renamed, is_admin: 0 })
  })
})
