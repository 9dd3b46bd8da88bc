import { env } from 'cloudflare:workers'
import { eq } from 'drizzle-orm'
import { Hono } from 'hono'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Env } from '../config'
import { posts, users } from '../db/schema'
import { onError } from '../errors'
import { ACCESS_COOKIE, CSRF_HEADER, setTokenCookies } from '../http/cookie-mode'
import { createRouter } from '../router'
import { revocationStoreOf, revokeSessionKeys } from '../sessions/revocation-keys'
import { requireAdmin, requireUser } from './authenticate'
import type { Auth } from './authenticate'
import { withBindings } from './bindings'
import { withConfig } from './config'
import type { ConfigVariables } from './config'
import { observe } from './observe'
import { withTokenKeys } from './token-keys'
import { BASE_URL, expectProblem, makeAdmin, mintToken, registerUser, uniqueName } from '../../test/helpers'

// requireUser() and requireAdmin() (src/middleware/authenticate.ts) on a tiny app that mounts only
// what they read: observe (timings), config, token keys and the request's bindings, then a stub
// route. Tokens are minted with the test JWT_SECRET; requireUser reads no D1, so their subjects
// need no user row unless a test says otherwise.

type App = ReturnType<typeof createRouter>

/** The middleware requireUser/requireAdmin depend on, then the test's own routes. */
function authApp(routes: (app: App) => void): App {
  const app = createRouter()
  app.use(observe(), withConfig(), withTokenKeys(), withBindings())
  routes(app)
  app.onError(onError)
  return app
}

/** A route that answers with the Auth requireUser published. */
const whoAmI = authApp((app) => {
  app.on(['GET', 'POST'], '/me', requireUser(), (c) => c.json(c.var.auth))
})

function call(app: App, path: string, init: RequestInit = {}, workerEnv: Env = env): Promise<Response> {
  return Promise.resolve(app.request(`${BASE_URL}${path}`, init, workerEnv))
}

/** A subject no user row has (ids are autoincrement from 1); requireUser does not look. */
function someUserId(): number {
  return 1_000_000_000 + Math.floor(Math.random() * 1_000_000_000)
}

interface Minted {
  token: string
  sid: string
  jti: string
  exp: number
}

async function accessToken(sub: string | number, claims: Record<string, unknown> = {}): Promise<Minted> {
  const sid = crypto.randomUUID()
  const jti = crypto.randomUUID()
  const exp = Math.floor(Date.now() / 1000) + 300
  const token = await mintToken({ sub: String(sub), sid, jti, exp, ...claims })
  return { token, sid, jti, exp }
}

function revoke(minted: Minted): Promise<void> {
  return revokeSessionKeys(
    revocationStoreOf(env),
    [{ sid: minted.sid, lastTokenExpiresAt: minted.exp }],
    'test revocation',
    new Date(),
  )
}

const TOKEN_PAIR = {
  access_token: 'unused',
  refresh_token: 'unused',
  token_type: 'Bearer' as const,
  expires_in: 300,
  refresh_expires_in: 86_400,
}

/** The login session's CSRF token, as cookie mode hands it out (setTokenCookies). */
async function csrfTokenOf(sid: string): Promise<string> {
  const app = new Hono<{ Bindings: Env; Variables: ConfigVariables }>()
  app.use(withConfig())
  app.post('/login', async (c) => c.json(await setTokenCookies(c, TOKEN_PAIR, sid, c.var.config)))
  const res = await app.request(`${BASE_URL}/login`, { method: 'POST' }, env)
  return ((await res.json()) as { csrf_token: string }).csrf_token
}

function accessCookie(token: string): string {
  return `${ACCESS_COOKIE}=${token}`
}

async function postCount(title: string): Promise<number> {
  const row = await env.DB.prepare('SELECT count(*) AS n FROM posts WHERE title = ?').bind(title).first<{ n: number }>()
  return row?.n ?? 0
}

// Problems of 500 and above are logged by onError.
beforeEach(() => {
  vi.spyOn(console, 'error').mockImplementation(() => undefined)
})

afterEach(() => {
  vi.restoreAllMocks()
})

describe('the Authorization header', () => {
  it('accepts the Bearer and JWT schemes in any letter case', async () => {
    const { token } = await accessToken(someUserId())
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR', 'JWT', 'jwt']) {
      const res = await call(whoAmI, '/me', { headers: { authorization: `${scheme} ${token}` } })
      expect(res.status, scheme).toBe(200)
    }
  })

  it('accepts several spaces or a tab after the scheme, and blanks after the token', async () => {
    const { token } = await accessToken(someUserId())
    for (const header of [`Bearer  ${token}`, `Bearer\t${token}`, `Bearer ${token}   `, `Bearer \t ${token}\t`]) {
      const res = await call(whoAmI, '/me', { headers: { authorization: header } })
      expect(res.status, JSON.stringify(header)).toBe(200)
    }
  })

  it('refuses a missing header, another scheme, a scheme without a token or a token without a scheme: 401 not_authenticated', async () => {
    const { token } = await accessToken(someUserId())
    const headers = [
      undefined,
      '',
      'Bearer',
      'Bearer ',
      token,
      `Basic ${token}`,
      `Token ${token}`,
      `Bearer:${token}`,
      `BearerX ${token}`,
      `Bearer ${token} ${token}`,
    ]
    for (const header of headers) {
      const init = header === undefined ? {} : { headers: { authorization: header } }
      const res = await call(whoAmI, '/me', init)
      await expectProblem(res, 401, 'not_authenticated')
      expect(res.headers.get('www-authenticate'), JSON.stringify(header)).toBe('Bearer realm="api"')
    }
  })

  it('refuses a well-formed header whose token does not verify: 401 token_invalid', async () => {
    const forged = await mintToken({ sub: String(someUserId()) }, {}, 'another-secret-of-at-least-32-bytes!!')
    for (const token of ['not.a.jwt', forged]) {
      const res = await call(whoAmI, '/me', { headers: { authorization: `Bearer ${token}` } })
      await expectProblem(res, 401, 'token_invalid')
    }
  })
})

describe('the Auth it publishes', () => {
  it('carries the user id as a number, the session, the token id, the expiry and how it was sent', async () => {
    const userId = someUserId()
    const minted = await accessToken(userId)

    const res = await call(whoAmI, '/me', { headers: { authorization: `Bearer ${minted.token}` } })

    expect(res.status).toBe(200)
    const auth = (await res.json()) as Auth
    expect(auth).toEqual({
      userId,
      sessionId: minted.sid,
      tokenId: minted.jti,
      expiresAt: minted.exp,
      viaCookie: false,
    })
    expect(typeof auth.userId).toBe('number')
  })

  it('refuses a subject that is not one of our user ids: 401 token_invalid', async () => {
    // Signed with our key (another service holding it may mint anything), but no id can name it.
    for (const sub of ['abc', '0', '007', '-3', '1.5', '1e3', ' 12', '9007199254740993']) {
      const { token } = await accessToken(sub)
      const res = await call(whoAmI, '/me', { headers: { authorization: `Bearer ${token}` } })
      const problem = await expectProblem(res, 401, 'token_invalid')
      expect(problem.detail, sub).toBe('The token names a user that does not exist.')
    }
  })
})

describe('cookie mode', () => {
  it('authenticates a read by the access cookie alone, without a CSRF token', async () => {
    const minted = await accessToken(someUserId())

    const res = await call(whoAmI, '/me', { headers: { cookie: accessCookie(minted.token) } })

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ sessionId: minted.sid, viaCookie: true })
  })

  it("accepts a write by cookie only with the login session's CSRF token", async () => {
    const minted = await accessToken(someUserId())
    const other = await accessToken(someUserId())
    const cookie = accessCookie(minted.token)

    const without = await call(whoAmI, '/me', { method: 'POST', headers: { cookie } })
    await expectProblem(without, 403, 'forbidden')
    const otherSession = await call(whoAmI, '/me', {
      method: 'POST',
      headers: { cookie, [CSRF_HEADER]: await csrfTokenOf(other.sid) },
    })
    await expectProblem(otherSession, 403, 'forbidden')

    const withToken = await call(whoAmI, '/me', {
      method: 'POST',
      headers: { cookie, [CSRF_HEADER]: await csrfTokenOf(minted.sid) },
    })
    expect(withToken.status).toBe(200)
    expect(await withToken.json()).toMatchObject({ sessionId: minted.sid, viaCookie: true })
  })

  it('reads only the __Host- cookie', async () => {
    const { token } = await accessToken(someUserId())
    const res = await call(whoAmI, '/me', { headers: { cookie: `edgepress-access=${token}` } })
    await expectProblem(res, 401, 'not_authenticated')
  })

  it('ignores the cookie when an Authorization header is sent: no CSRF token needed, and the header alone decides', async () => {
    const viaHeader = await accessToken(someUserId())
    const viaCookie = await accessToken(someUserId())
    const cookie = accessCookie(viaCookie.token)

    const write = await call(whoAmI, '/me', {
      method: 'POST',
      headers: { cookie, authorization: `Bearer ${viaHeader.token}` },
    })
    expect(write.status).toBe(200)
    expect(await write.json()).toMatchObject({ sessionId: viaHeader.sid, viaCookie: false })

    const badHeader = await call(whoAmI, '/me', { headers: { cookie, authorization: 'Basic dXNlcjpwYXNz' } })
    await expectProblem(badHeader, 401, 'not_authenticated')
  })
})

describe('revoked sessions', () => {
  it("answers 401 token_revoked and throws the handler's response away", async () => {
    const minted = await accessToken(someUserId())
    await revoke(minted)
    let handled = false
    const app = authApp((a) => {
      a.get('/read', requireUser(), (c) => {
        handled = true
        return c.json({ secret: 'must not be sent' })
      })
    })

    const res = await call(app, '/read', { headers: { authorization: `Bearer ${minted.token}` } })

    // The handler ran while the revocation check was on its way; its answer was not sent.
    expect(handled).toBe(true)
    const problem = await expectProblem(res, 401, 'token_revoked')
    expect(JSON.stringify(problem)).not.toContain('must not be sent')
    expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"')
  })

  it('leaves other sessions of the same user alone', async () => {
    const userId = someUserId()
    const revoked = await accessToken(userId)
    const live = await accessToken(userId)
    await revoke(revoked)

    const res = await call(whoAmI, '/me', { headers: { authorization: `Bearer ${live.token}` } })
    expect(res.status).toBe(200)
  })

  it('refuses a revoked session by cookie too', async () => {
    const minted = await accessToken(someUserId())
    await revoke(minted)
    const res = await call(whoAmI, '/me', { headers: { cookie: accessCookie(minted.token) } })
    await expectProblem(res, 401, 'token_revoked')
  })
})

describe('the write gate', () => {
  it("holds the handler's KV and D1 writes until the revocation check has answered; its reads go out at once", async () => {
    const user = await registerUser()
    const minted = await accessToken(user.id)
    const key = `test:${uniqueName('gated')}`
    const title = uniqueName('gated-post')
    const log: string[] = []
    let answer: () => void = () => undefined
    const held = new Promise<void>((resolve) => {
      answer = resolve
    })
    // REVOKED_TOKENS whose revocation lookup answers only when the handler lets it.
    const heldKv = {
      async get(name: string, options: KVNamespaceGetOptions<'text'>) {
        log.push('revocation asked')
        await held
        const value = await env.REVOKED_TOKENS.get(name, options)
        log.push('revocation answered')
        return value
      },
      put(name: string, value: string) {
        log.push('kv put')
        return env.REVOKED_TOKENS.put(name, value)
      },
    } as unknown as KVNamespace
    let seenBeforeAnswer: { post: number; kv: string | null } | undefined
    const app = authApp((a) => {
      a.post('/write', requireUser(), async (c) => {
        const now = new Date()
        const kvWrite = c.var.kv.put(key, 'written')
        const d1Write = c.var.db
          .insert(posts)
          .values({ authorId: user.id, title, body: 'held back', slug: title, createdAt: now, updatedAt: now })
          .run()
        const [row] = await c.var.db.select({ id: users.id }).from(users).where(eq(users.id, user.id))
        log.push(`read user ${row?.id}`)
        seenBeforeAnswer = { post: await postCount(title), kv: await env.REVOKED_TOKENS.get(key) }
        answer()
        await Promise.all([kvWrite, d1Write])
        return c.json({ ok: true })
      })
    })

    const res = await call(
      app,
      '/write',
      { method: 'POST', headers: { authorization: `Bearer ${minted.token}` } },
      { ...env, REVOKED_TOKENS: heldKv },
    )

    expect(res.status).toBe(200)
    expect(log).toEqual(['revocation asked', `read user ${user.id}`, 'revocation answered', 'kv put'])
    expect(seenBeforeAnswer).toEqual({ post: 0, kv: null })
    expect(await postCount(title)).toBe(1)
    expect(await env.REVOKED_TOKENS.get(key)).toBe('written')
  })

  it('refuses every write of a request whose session turns out to be revoked', async () => {
    const user = await registerUser()
    const minted = await accessToken(user.id)
    await revoke(minted)
    const key = `test:${uniqueName('refused')}`
    const title = uniqueName('refused-post')
    let outcomes: string[] = []
    const app = authApp((a) => {
      a.post('/write', requireUser(), async (c) => {
        const now = new Date()
        const settled = await Promise.allSettled([
          c.var.kv.put(key, 'written'),
          c.var.db
            .insert(posts)
            .values({ authorId: user.id, title, body: 'never written', slug: title, createdAt: now, updatedAt: now })
            .run(),
        ])
        outcomes = settled.map((result) => result.status)
        return c.json({ ok: true })
      })
    })

    const res = await call(app, '/write', { method: 'POST', headers: { authorization: `Bearer ${minted.token}` } })

    await expectProblem(res, 401, 'token_revoked')
    expect(outcomes).toEqual(['rejected', 'rejected'])
    expect(await env.REVOKED_TOKENS.get(key)).toBeNull()
    expect(await postCount(title)).toBe(0)
  })
})

describe('when KV cannot answer', () => {
  const kvDown: Env = {
    ...env,
    REVOKED_TOKENS: {
      get: () => Promise.reject(new Error('KV is unreachable')),
    } as unknown as KVNamespace,
  }

  it('fails closed: 503 service_unavailable with Retry-After, never the handler’s answer', async () => {
    const { token } = await accessToken(someUserId())
    const res = await call(whoAmI, '/me', { headers: { authorization: `Bearer ${token}` } }, kvDown)
    await expectProblem(res, 503, 'service_unavailable')
    expect(res.headers.get('retry-after')).toBe('5')
  })

  it('fails closed for administrators too', async () => {
    const admin = await registerUser()
    await makeAdmin(admin.id)
    const { token } = await accessToken(admin.id)
    const res = await call(adminApp(), '/admin', { headers: { authorization: `Bearer ${token}` } }, kvDown)
    await expectProblem(res, 503, 'service_unavailable')
    expect(res.headers.get('retry-after')).toBe('5')
  })
})

describe('write rate limit', () => {
  it('counts writes, not reads, against WRITES_BY_USER under the user id', async () => {
    const keys: string[] = []
    const limiter = (env as Env).WRITES_BY_USER!
    const counted: Env = {
      ...env,
      WRITES_BY_USER: {
        limit: (options: { key: string }) => {
          keys.push(options.key)
          return limiter.limit(options)
        },
      },
    }
    const userId = someUserId()
    const { token } = await accessToken(userId)
    const authorization = `Bearer ${token}`

    expect((await call(whoAmI, '/me', { headers: { authorization } }, counted)).status).toBe(200)
    expect(keys).toEqual([])
    expect((await call(whoAmI, '/me', { method: 'POST', headers: { authorization } }, counted)).status).toBe(200)
    expect(keys).toEqual([`user:${userId}`])
  })
})

function adminApp(onHandled: (user: { id: number; isAdmin: boolean }) => void = () => undefined): App {
  return authApp((app) => {
    app.get('/admin', requireAdmin(), (c) => {
      onHandled(c.var.user)
      return c.json({ auth: c.var.auth, user: { id: c.var.user.id, isAdmin: c.var.user.isAdmin } })
    })
  })
}

describe('requireAdmin', () => {
  it('lets an administrator through with their row published', async () => {
    const admin = await registerUser()
    await makeAdmin(admin.id)
    const minted = await accessToken(admin.id)

    const res = await call(adminApp(), '/admin', { headers: { authorization: `Bearer ${minted.token}` } })

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({
      auth: { userId: admin.id, sessionId: minted.sid },
      user: { id: admin.id, isAdmin: true },
    })
  })

  it('refuses a user who is not an administrator: 403 forbidden', async () => {
    const user = await registerUser()
    const { token } = await accessToken(user.id)
    let handled = false
    const res = await call(
      adminApp(() => {
        handled = true
      }),
      '/admin',
      { headers: { authorization: `Bearer ${token}` } },
    )
    await expectProblem(res, 403, 'forbidden')
    expect(handled).toBe(false)
  })

  it('refuses a token whose user does not exist: 401 token_invalid', async () => {
    const { token } = await accessToken(9_000_000_000_000)
    const res = await call(adminApp(), '/admin', { headers: { authorization: `Bearer ${token}` } })
    const problem = await expectProblem(res, 401, 'token_invalid')
    expect(problem.detail).toBe('The token names a user that does not exist.')
  })

  it('refuses a revoked administrator session before the handler runs', async () => {
    const admin = await registerUser()
    await makeAdmin(admin.id)
    const minted = await accessToken(admin.id)
    await revoke(minted)
    let handled = false
    const res = await call(
      adminApp(() => {
        handled = true
      }),
      '/admin',
      { headers: { authorization: `Bearer ${minted.token}` } },
    )
    await expectProblem(res, 401, 'token_revoked')
    expect(handled).toBe(false)
  })

  it('needs a token like requireUser: none is 401 not_authenticated', async () => {
    await expectProblem(await call(adminApp(), '/admin'), 401, 'not_authenticated')
  })
})
