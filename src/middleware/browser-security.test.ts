import { describe, it } from 'vitest'
import {
  BASE_URL,
  api,
  expectProblem,
  fetchWorker,
  login,
  mintToken,
  registerAndLogin,
  registerUser,
} from '../../test/helpers'
import type { RegisteredUser } from '../../test/helpers'

// What a browser sees (STYLE.md rule 8): CORS for the configured origins only (vitest.config.ts sets
// CORS_ORIGINS to https://app.example.com and http://localhost:5173), the security headers of every
// API response, and cookie mode (`?mode=cookie`) with its CSRF token. Every request goes through the
// worker's fetch, so the middleware order in src/index.ts is under test too.

const ALLOWED_ORIGIN = 'https://app.example.com'
const FOREIGN_ORIGIN = 'https://evil.example'
const ACCESS_COOKIE = '__Host-edgepress-access'
const REFRESH_COOKIE = '__Host-edgepress-refresh'
const CSRF_COOKIE = '__Host-edgepress-csrf'
const SESSION_COOKIES = [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE]

interface SetCookie {
  name: string
  value: string
  /** Attribute names lower-cased; flags (HttpOnly, Secure) map to ''. */
  attributes: Map<string, string>
}

interface CookieSessionBody {
  token_type: string
  expires_in: number
  refresh_expires_in: number
  csrf_token: string
}

interface CookieSession {
  res: Response
  body: CookieSessionBody
  cookies: Map<string, SetCookie>
  /** A `Cookie` request header carrying every cookie the response set. */
  cookie: string
}

function parseSetCookie(line: string): SetCookie {
  const [pair = '', ...attributeParts] = line.split(';')
  const eq = pair.indexOf('=')
  const attributes = new Map<string, string>()
  for (const part of attributeParts) {
    const [key = '', ...rest] = part.trim().split('=')
    attributes.set(key.toLowerCase(), rest.join('='))
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attributes }
}

/** Every Set-Cookie line (workerd has getSetCookie(); @cloudflare/workers-types does not declare it). */
function setCookieLines(res: Response): string[] {
  return (res.headers as Headers & { getSetCookie(): string[] }).getSetCookie()
}

function setCookiesOf(res: Response): Map<string, SetCookie> {
  return new Map(
    setCookieLines(res)
      .map(parseSetCookie)
      .map((cookie) => [cookie.name, cookie]),
  )
}

function cookieHeaderOf(cookies: Map<string, SetCookie>, names: string[] = SESSION_COOKIES): string {
  return names.map((name) => `${name}=${cookies.get(name)?.value ?? ''}`).join('; ')
}

async function cookieLogin(
  user: Pick<RegisteredUser, 'username' | 'password'>,
  path = '/auth/token',
): Promise<CookieSession> {
  const res = await api('POST', `${path}?mode=cookie`, { username: user.username, password: user.password })
  if (res.status !== 200) throw new Error(`cookie login failed: ${res.status} ${await res.text()}`)
  const body = (await res.json()) as CookieSessionBody
  const cookies = setCookiesOf(res)
  return { res, body, cookies, cookie: cookieHeaderOf(cookies) }
}

async function registerAndCookieLogin(): Promise<{ user: RegisteredUser; session: CookieSession }> {
  const user = await registerUser()
  return { user, session: await cookieLogin(user) }
}

function newPost(headers: Record<string, string>, title = 'Posted from a browser'): Promise<Response> {
  return api('POST', '/posts', { title, body: 'cookie mode' }, undefined, headers)
}

async function postsBy(userId: number): Promise<unknown[]> {
  const res = await api('GET', `/posts?author=${userId}`)
  if (res.status !== 200) throw new Error(`listing posts failed: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { results: unknown[] }).results
}

function corsHeaderNames(res: Response): string[] {
  return [...res.headers.keys()].filter((name) => name.toLowerCase().startsWith('access-control-'))
}

function listHeader(res: Response, name: string): string[] {
  return (res.headers.get(name) ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== '')
}

function preflight(origin: string, path = '/api/v1/posts'): Promise<Response> {
  return fetchWorker(`${BASE_URL}${path}`, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type, x-csrf-token',
    },
  })
}

describe('CORS', () => {
  it('lets a configured origin read responses, with credentials and the headers clients need', async ({ expect }) => {
    const res = await api('GET', '/health', undefined, undefined, { origin: ALLOWED_ORIGIN })
    expect(res.status).toBe(200)
    expect(res.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN)
    expect(res.headers.get('access-control-allow-credentials')).toBe('true')
    expect(listHeader(res, 'access-control-expose-headers')).toEqual(
      expect.arrayContaining(['etag', 'x-request-id', 'retry-after']),
    )
    expect(listHeader(res, 'vary')).toContain('origin')
  })

  it('allows every configured origin, not only the first', async ({ expect }) => {
    const res = await api('GET', '/health', undefined, undefined, { origin: 'http://localhost:5173' })
    expect(res.headers.get('access-control-allow-origin')).toBe('http://localhost:5173')
  })

  it('answers a preflight from a configured origin with 204 and what may be sent', async ({ expect }) => {
    const res = await preflight(ALLOWED_ORIGIN)
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN)
    expect(res.headers.get('access-control-allow-credentials')).toBe('true')
    expect(listHeader(res, 'access-control-allow-methods')).toContain('post')
    expect(listHeader(res, 'access-control-allow-headers')).toEqual(
      expect.arrayContaining(['x-csrf-token', 'authorization', 'content-type']),
    )
    expect(Number(res.headers.get('access-control-max-age'))).toBeGreaterThan(0)
    expect(listHeader(res, 'vary')).toContain('origin')
    expect(await res.text()).toBe('')
  })

  it('gives a preflight answer an X-Request-Id, like every response (docs/API.md § General)', async ({ expect }) => {
    const generated = await preflight(ALLOWED_ORIGIN)
    expect(generated.status).toBe(204)
    expect(generated.headers.get('x-request-id') ?? '').toMatch(/\S/)

    const echoed = await fetchWorker(`${BASE_URL}/api/v1/posts`, {
      method: 'OPTIONS',
      headers: { origin: ALLOWED_ORIGIN, 'access-control-request-method': 'POST', 'x-request-id': 'preflight-1234' },
    })
    expect(echoed.headers.get('x-request-id')).toBe('preflight-1234')
  })

  it('sends no Access-Control-* header at all to an origin that is not configured', async ({ expect }) => {
    const pre = await preflight(FOREIGN_ORIGIN)
    expect(corsHeaderNames(pre)).toEqual([])

    const get = await api('GET', '/health', undefined, undefined, { origin: FOREIGN_ORIGIN })
    expect(get.status).toBe(200)
    expect(corsHeaderNames(get)).toEqual([])
  })

  it('does not treat a look-alike of a configured origin as configured', async ({ expect }) => {
    for (const origin of [
      'https://app.example.com.evil.example',
      'http://app.example.com',
      'https://APP.example.com:443x',
      'null',
    ]) {
      const res = await api('GET', '/health', undefined, undefined, { origin })
      expect(corsHeaderNames(res), origin).toEqual([])
    }
  })

  it('sends no Access-Control-* header to a request without Origin', async ({ expect }) => {
    const res = await api('GET', '/health')
    expect(res.status).toBe(200)
    expect(corsHeaderNames(res)).toEqual([])
  })

  it('adds the CORS headers to error responses of a configured origin too', async ({ expect }) => {
    const res = await api('GET', '/users/me', undefined, undefined, { origin: ALLOWED_ORIGIN })
    await expectProblem(res, 401, 'not_authenticated')
    expect(res.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN)
    expect(listHeader(res, 'access-control-expose-headers')).toContain('www-authenticate')
  })

  it('never serves one origin the CORS headers of another from the edge cache', async ({ expect }) => {
    const { user } = await registerAndLogin()
    const path = `/users/${user.id}`
    const first = await api('GET', path, undefined, undefined, { origin: ALLOWED_ORIGIN })
    expect(first.status).toBe(200)
    expect(first.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN)

    const foreign = await api('GET', path, undefined, undefined, { origin: FOREIGN_ORIGIN })
    expect(foreign.status).toBe(200)
    expect(corsHeaderNames(foreign)).toEqual([])

    const other = await api('GET', path, undefined, undefined, { origin: 'http://localhost:5173' })
    expect(other.headers.get('access-control-allow-origin')).toBe('http://localhost:5173')
  })

  it('answers an OPTIONS that is not a preflight with 405 and Allow', async ({ expect }) => {
    const res = await fetchWorker(`${BASE_URL}/api/v1/posts`, {
      method: 'OPTIONS',
      headers: { origin: ALLOWED_ORIGIN },
    })
    await expectProblem(res, 405, 'method_not_allowed')
    const allow = listHeader(res, 'allow')
    expect(allow).toEqual(expect.arrayContaining(['get', 'post']))
    expect(allow).not.toContain('options')
  })
})

describe('Security headers', () => {
  function expectSecurityHeaders(res: Response): void {
    const hsts = res.headers.get('strict-transport-security') ?? ''
    if (!/max-age=\d+/.test(hsts)) throw new Error(`no HSTS max-age: ${hsts}`)
    const csp = res.headers.get('content-security-policy') ?? ''
    const directives = csp.split(';').map((directive) => directive.trim())
    if (!directives.includes("default-src 'none'") || !directives.includes("frame-ancestors 'none'")) {
      throw new Error(`CSP lets a response load or be framed: ${csp}`)
    }
    const expected = {
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
    }
    for (const [name, value] of Object.entries(expected)) {
      if (res.headers.get(name) !== value) throw new Error(`${name}: expected ${value}, got ${res.headers.get(name)}`)
    }
  }

  it('are on a 200 JSON response', async ({ expect }) => {
    const res = await api('GET', '/health')
    expect(res.status).toBe(200)
    expectSecurityHeaders(res)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  })

  it('are on an authenticated JSON response', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await api('GET', '/users/me', undefined, tokens.access_token)
    expect(res.status).toBe(200)
    expectSecurityHeaders(res)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  })

  it('are on problem responses (401, 404, 405)', async ({ expect }) => {
    const unauthenticated = await api('GET', '/users/me')
    expectSecurityHeaders(unauthenticated)
    await expectProblem(unauthenticated, 401, 'not_authenticated')

    const unknown = await api('GET', '/no-such-route')
    expectSecurityHeaders(unknown)
    await expectProblem(unknown, 404, 'not_found')

    const wrongMethod = await api('DELETE', '/posts')
    expectSecurityHeaders(wrongMethod)
    await expectProblem(wrongMethod, 405, 'method_not_allowed')
    expect(wrongMethod.headers.get('content-type')).toMatch(/^application\/problem\+json/)
  })

  it('are on the cookie-mode login', async ({ expect }) => {
    const user = await registerUser()
    const { res } = await cookieLogin(user)
    expectSecurityHeaders(res)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  })
})

describe('Cookie mode: login', () => {
  it('sets the tokens as __Host- cookies and returns only the CSRF token', async ({ expect }) => {
    const user = await registerUser()
    const { res, body, cookies } = await cookieLogin(user)

    expect(body).toEqual({
      token_type: 'Cookie',
      expires_in: 300,
      refresh_expires_in: 86_400,
      csrf_token: expect.any(String),
    })
    expect(body).not.toHaveProperty('access_token')
    expect(body).not.toHaveProperty('refresh_token')
    expect(body.csrf_token.length).toBeGreaterThanOrEqual(16)

    expect(setCookieLines(res)).toHaveLength(3)
    expect([...cookies.keys()].sort()).toEqual([...SESSION_COOKIES].sort())
    for (const cookie of cookies.values()) {
      expect(cookie.value, cookie.name).not.toBe('')
      expect(cookie.attributes.get('path'), cookie.name).toBe('/')
      expect(cookie.attributes.has('secure'), cookie.name).toBe(true)
      expect(cookie.attributes.get('samesite')?.toLowerCase(), cookie.name).toBe('strict')
      expect(cookie.attributes.has('domain'), cookie.name).toBe(false)
    }

    const access = cookies.get(ACCESS_COOKIE)!
    expect(access.attributes.has('httponly')).toBe(true)
    expect(access.attributes.get('max-age')).toBe('300')
    const refresh = cookies.get(REFRESH_COOKIE)!
    expect(refresh.attributes.has('httponly')).toBe(true)
    expect(refresh.attributes.get('max-age')).toBe('86400')
    const csrf = cookies.get(CSRF_COOKIE)!
    expect(csrf.attributes.has('httponly')).toBe(false)
    expect(decodeURIComponent(csrf.value)).toBe(body.csrf_token)
  })

  it('sends Cache-Control: no-store so no cache keeps the session', async ({ expect }) => {
    const user = await registerUser()
    const { res } = await cookieLogin(user)
    expect(res.headers.get('cache-control')).toContain('no-store')
  })

  it('works on the /auth/login alias too', async ({ expect }) => {
    const user = await registerUser()
    const { res, body, cookies, cookie } = await cookieLogin(user, '/auth/login')
    expect(body).toMatchObject({ token_type: 'Cookie', expires_in: 300, refresh_expires_in: 86_400 })
    expect(body).not.toHaveProperty('access_token')
    expect([...cookies.keys()].sort()).toEqual([...SESSION_COOKIES].sort())
    expect(cookies.get(CSRF_COOKIE)?.value).toBe(body.csrf_token)
    expect(res.headers.get('cache-control')).toContain('no-store')

    const me = await api('GET', '/users/me', undefined, undefined, { cookie })
    expect(me.status).toBe(200)
  })

  it('sets no cookie and returns the token pair without ?mode=cookie', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('POST', '/auth/token', { username: user.username, password: user.password })
    expect(res.status).toBe(200)
    expect(setCookieLines(res)).toEqual([])
    expect(await res.json()).toMatchObject({ token_type: 'Bearer', access_token: expect.any(String) })
  })

  it('sets no cookie when the credentials are wrong', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('POST', '/auth/token?mode=cookie', { username: user.username, password: 'wrong password!' })
    await expectProblem(res, 401, 'invalid_credentials')
    expect(setCookieLines(res)).toEqual([])
  })
})

describe('Cookie mode: authenticated requests', () => {
  it('authenticates a GET with the cookie alone', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const res = await api('GET', '/users/me', undefined, undefined, { cookie: session.cookie })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username: user.username })
  })

  it('authenticates with the access cookie alone (the others are not needed for reads)', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const cookie = cookieHeaderOf(session.cookies, [ACCESS_COOKIE])
    const res = await api('GET', '/users/me', undefined, undefined, { cookie })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id })
  })

  it('refuses a write without X-CSRF-Token and creates nothing', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const res = await newPost({ cookie: session.cookie })
    await expectProblem(res, 403, 'forbidden')
    expect(await postsBy(user.id)).toEqual([])
  })

  it('refuses a write with a wrong X-CSRF-Token', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const wrong = session.body.csrf_token.slice(0, -2) + (session.body.csrf_token.endsWith('AA') ? 'BB' : 'AA')
    for (const token of [wrong, 'not-a-token', 'x'.repeat(200), session.cookies.get(ACCESS_COOKIE)!.value]) {
      const res = await newPost({ cookie: session.cookie, 'x-csrf-token': token })
      await expectProblem(res, 403, 'forbidden')
    }
    expect(await postsBy(user.id)).toEqual([])
  })

  it('accepts a write with the session’s X-CSRF-Token', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const res = await newPost({ cookie: session.cookie, 'x-csrf-token': session.body.csrf_token })
    expect(res.status).toBe(201)
    expect(await res.json()).toMatchObject({ author: { id: user.id, username: user.username } })
    expect(await postsBy(user.id)).toHaveLength(1)
  })

  it('refuses the CSRF token of another session, of the same user or of another', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const sameUserOtherSession = await cookieLogin(user)
    const { session: otherUserSession } = await registerAndCookieLogin()
    expect(sameUserOtherSession.body.csrf_token).not.toBe(session.body.csrf_token)

    for (const foreign of [sameUserOtherSession, otherUserSession]) {
      const res = await newPost({ cookie: session.cookie, 'x-csrf-token': foreign.body.csrf_token })
      await expectProblem(res, 403, 'forbidden')
    }
    expect(await postsBy(user.id)).toEqual([])
  })

  it('prefers an Authorization header to the cookies, and then needs no CSRF token', async ({ expect }) => {
    const { user: cookieUser, session } = await registerAndCookieLogin()
    const { user: bearerUser, tokens } = await registerAndLogin()
    const res = await newPost({ cookie: session.cookie, authorization: `Bearer ${tokens.access_token}` })
    expect(res.status).toBe(201)
    expect(await res.json()).toMatchObject({ author: { id: bearerUser.id } })
    expect(await postsBy(cookieUser.id)).toEqual([])
  })

  it('does not fall back to the cookie when the Authorization header is invalid', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const res = await api('GET', '/users/me', undefined, undefined, {
      cookie: session.cookie,
      authorization: 'Bearer not.a.jwt',
    })
    await expectProblem(res, 401, 'token_invalid')
    expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"')
  })

  it('refuses an expired access cookie', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const now = Math.floor(Date.now() / 1000)
    const expired = await mintToken({ sub: String(user.id), iat: now - 3600, nbf: now - 3600, exp: now - 1800 })
    const res = await api('GET', '/users/me', undefined, undefined, {
      cookie: `${ACCESS_COOKIE}=${expired}; ${CSRF_COOKIE}=${session.body.csrf_token}`,
    })
    await expectProblem(res, 401, 'token_expired')
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="api"/)
  })

  it('refuses a garbage access cookie', async ({ expect }) => {
    for (const value of ['garbage', 'a.b.c', '']) {
      const res = await api('GET', '/users/me', undefined, undefined, { cookie: `${ACCESS_COOKIE}=${value}` })
      expect(res.status, value).toBe(401)
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    }
  })

  it('refuses a refresh token presented as the access cookie', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const refreshValue = session.cookies.get(REFRESH_COOKIE)!.value
    const res = await api('GET', '/users/me', undefined, undefined, { cookie: `${ACCESS_COOKIE}=${refreshValue}` })
    await expectProblem(res, 401, 'token_invalid')
    expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"')
  })

  it('ignores the token under a cookie name without the __Host- prefix', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const access = session.cookies.get(ACCESS_COOKIE)!.value
    const res = await api('GET', '/users/me', undefined, undefined, { cookie: `edgepress-access=${access}` })
    await expectProblem(res, 401, 'not_authenticated')
    expect(res.headers.get('www-authenticate')).not.toContain('error=')
  })
})

describe('Cookie mode: refresh', () => {
  function refreshWithCookies(headers: Record<string, string>, body?: unknown): Promise<Response> {
    return api('POST', '/auth/token/refresh?mode=cookie', body, undefined, headers)
  }

  it('rotates the session from the refresh cookie and sets new cookies', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const res = await refreshWithCookies({ cookie: session.cookie, 'x-csrf-token': session.body.csrf_token })
    expect(res.status).toBe(200)
    const body = (await res.json()) as CookieSessionBody
    expect(body).toEqual({
      token_type: 'Cookie',
      expires_in: 300,
      refresh_expires_in: 86_400,
      csrf_token: expect.any(String),
    })
    expect(res.headers.get('cache-control')).toContain('no-store')

    const cookies = setCookiesOf(res)
    expect([...cookies.keys()].sort()).toEqual([...SESSION_COOKIES].sort())
    expect(cookies.get(ACCESS_COOKIE)!.value).not.toBe(session.cookies.get(ACCESS_COOKIE)!.value)
    expect(cookies.get(REFRESH_COOKIE)!.value).not.toBe(session.cookies.get(REFRESH_COOKIE)!.value)
    expect(cookies.get(ACCESS_COOKIE)!.attributes.has('httponly')).toBe(true)
    expect(cookies.get(CSRF_COOKIE)!.value).toBe(body.csrf_token)

    const renewed = cookieHeaderOf(cookies)
    const me = await api('GET', '/users/me', undefined, undefined, { cookie: renewed })
    expect(await me.json()).toMatchObject({ id: user.id })
    const post = await newPost({ cookie: renewed, 'x-csrf-token': body.csrf_token })
    expect(post.status).toBe(201)
  })

  it('refuses a cookie refresh without X-CSRF-Token and does not rotate', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const res = await refreshWithCookies({ cookie: session.cookie })
    await expectProblem(res, 403, 'forbidden')
    expect(setCookieLines(res)).toEqual([])

    // The refused attempt did not consume the refresh token.
    const retry = await refreshWithCookies({ cookie: session.cookie, 'x-csrf-token': session.body.csrf_token })
    expect(retry.status).toBe(200)
  })

  it('refuses a cookie refresh with the CSRF token of another session', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const { session: other } = await registerAndCookieLogin()
    const res = await refreshWithCookies({ cookie: session.cookie, 'x-csrf-token': other.body.csrf_token })
    await expectProblem(res, 403, 'forbidden')
    expect(setCookieLines(res)).toEqual([])
  })

  it('answers 400 validation_failed naming refresh_token with neither cookie nor body', async ({ expect }) => {
    const res = await refreshWithCookies({})
    const problem = await expectProblem(res, 400, 'validation_failed')
    expect(problem.errors?.map((error) => error.path)).toContain('refresh_token')
  })

  it('does not read the refresh cookie outside cookie mode', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const res = await api('POST', '/auth/token/refresh', undefined, undefined, {
      cookie: session.cookie,
      'x-csrf-token': session.body.csrf_token,
    })
    const problem = await expectProblem(res, 400, 'validation_failed')
    expect(problem.errors?.map((error) => error.path)).toContain('refresh_token')
  })
})

describe('Cookie mode: logout', () => {
  it('ends the session and expires all three cookies', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const res = await api('POST', '/auth/logout', undefined, undefined, {
      cookie: session.cookie,
      'x-csrf-token': session.body.csrf_token,
    })
    expect(res.status).toBe(204)

    const cleared = setCookiesOf(res)
    expect([...cleared.keys()].sort()).toEqual([...SESSION_COOKIES].sort())
    for (const cookie of cleared.values()) {
      expect(cookie.value, cookie.name).toBe('')
      expect(cookie.attributes.get('max-age'), cookie.name).toBe('0')
      expect(cookie.attributes.get('path'), cookie.name).toBe('/')
      expect(cookie.attributes.has('secure'), cookie.name).toBe(true)
    }

    const me = await api('GET', '/users/me', undefined, undefined, { cookie: session.cookie })
    await expectProblem(me, 401, 'token_revoked')
    const refresh = await api('POST', '/auth/token/refresh?mode=cookie', undefined, undefined, {
      cookie: session.cookie,
      'x-csrf-token': session.body.csrf_token,
    })
    expect(refresh.status).toBe(401)
  })

  it('refuses a cookie logout without X-CSRF-Token, and the session lives on', async ({ expect }) => {
    const { session } = await registerAndCookieLogin()
    const res = await api('POST', '/auth/logout', undefined, undefined, { cookie: session.cookie })
    await expectProblem(res, 403, 'forbidden')
    expect(setCookieLines(res)).toEqual([])

    const me = await api('GET', '/users/me', undefined, undefined, { cookie: session.cookie })
    expect(me.status).toBe(200)
  })

  it('does not touch cookies on a bearer logout', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/logout', undefined, tokens.access_token)
    expect(res.status).toBe(204)
    expect(setCookieLines(res)).toEqual([])
  })
})

describe('Cookie mode: the tokens stay out of reach of scripts and caches', () => {
  it('never puts a JWT in a cookie-mode body, nor in a readable cookie', async ({ expect }) => {
    const user = await registerUser()
    const { body, cookies } = await cookieLogin(user)
    const jwtShape = /^[\w-]+\.[\w-]+\.[\w-]+$/
    for (const value of Object.values(body)) expect(String(value)).not.toMatch(jwtShape)
    for (const cookie of cookies.values()) {
      if (!cookie.attributes.has('httponly')) expect(cookie.value, cookie.name).not.toMatch(jwtShape)
    }
  })

  it('marks the cookie-mode token and refresh answers no-store; a later login gets its own tokens', async ({
    expect,
  }) => {
    const user = await registerUser()
    const session = await cookieLogin(user)
    expect(session.res.headers.get('cache-control')).toContain('no-store')
    const refreshed = await api('POST', '/auth/token/refresh?mode=cookie', undefined, undefined, {
      cookie: session.cookie,
      'x-csrf-token': session.body.csrf_token,
    })
    expect(refreshed.status).toBe(200)
    expect(refreshed.headers.get('cache-control')).toContain('no-store')

    // A second login with the same credentials gets a session of its own, not a stored copy.
    const again = await login(user)
    expect(again.access_token).not.toBe(session.cookies.get(ACCESS_COOKIE)!.value)
  })
})

describe('Cookie mode: login CSRF (a cross-site form must not log the browser in)', () => {
  it.for([
    ['a foreign Origin', { origin: FOREIGN_ORIGIN }],
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    [
      'a foreign Origin on a form body',
      { origin: FOREIGN_ORIGIN, 'content-type': 'application/x-www-form-urlencoded' },
    ],
  ] as [string, Record<string, string>][])(
    'refuses POST /auth/token?mode=cookie with %s: 403, no cookie',
    async ([, headers], { expect }) => {
      const user = await registerUser()
      const form = headers['content-type'] === 'application/x-www-form-urlencoded'
      const body = form
        ? new URLSearchParams({ username: user.username, password: user.password }).toString()
        : { username: user.username, password: user.password }
      const res = await api('POST', '/auth/token?mode=cookie', body, undefined, { ...headers })
      expect(setCookieLines(res)).toEqual([])
      await expectProblem(res, 403, 'forbidden')
    },
  )

  it('refuses a cookie-mode refresh from a foreign origin: 403, no new cookie, the session lives on', async ({
    expect,
  }) => {
    const { session } = await registerAndCookieLogin()
    const res = await api('POST', '/auth/token/refresh?mode=cookie', {}, undefined, {
      cookie: session.cookie,
      'x-csrf-token': session.body.csrf_token,
      origin: FOREIGN_ORIGIN,
    })
    expect(setCookieLines(res)).toEqual([])
    await expectProblem(res, 403, 'forbidden')
    const me = await api('GET', '/users/me', undefined, undefined, { cookie: session.cookie })
    expect(me.status).toBe(200)
  })

  it.for([
    ['the API origin', { origin: BASE_URL, 'sec-fetch-site': 'same-origin' }],
    ['a configured CORS origin', { origin: ALLOWED_ORIGIN, 'sec-fetch-site': 'same-site' }],
    ['no Origin (not a browser)', {}],
  ] as [string, Record<string, string>][])('accepts a cookie-mode login from %s', async ([, headers], { expect }) => {
    const user = await registerUser()
    const res = await api(
      'POST',
      '/auth/token?mode=cookie',
      { username: user.username, password: user.password },
      undefined,
      { ...headers },
    )
    expect(res.status).toBe(200)
    expect([...setCookiesOf(res).keys()].sort()).toEqual([...SESSION_COOKIES].sort())
  })
})

describe('Cookie mode: password change', () => {
  it('answers a caller who came by cookie with new cookies, never tokens in the body', async ({ expect }) => {
    const { user, session } = await registerAndCookieLogin()
    const res = await api(
      'POST',
      '/auth/password/change',
      { old_password: user.password, new_password: 'a brand new password' },
      undefined,
      { cookie: session.cookie, 'x-csrf-token': session.body.csrf_token },
    )
    expect(res.status).toBe(200)
    const body = (await res.json()) as Record<string, unknown>
    expect(body).toMatchObject({ token_type: 'Cookie', csrf_token: expect.any(String) })
    expect(body).not.toHaveProperty('access_token')
    expect(body).not.toHaveProperty('refresh_token')
    expect(res.headers.get('cache-control')).toBe('no-store')
    const cookies = setCookiesOf(res)
    expect([...cookies.keys()].sort()).toEqual([...SESSION_COOKIES].sort())
    expect(cookies.get(CSRF_COOKIE)!.value).toBe(body.csrf_token)

    // The new cookies are a working session; the old ones are not.
    const fresh = await api('GET', '/users/me', undefined, undefined, { cookie: cookieHeaderOf(cookies) })
    expect(fresh.status).toBe(200)
    await expectProblem(
      await api('GET', '/users/me', undefined, undefined, { cookie: session.cookie }),
      401,
      'token_revoked',
    )
  })
})
