import { env } from 'cloudflare:workers'
import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import type { Env } from '../config'
import { onError } from '../errors'
import { fromBase64Url } from '../lib/encoding'
import { withConfig } from '../middleware/config'
import type { AppEnv } from '../router'
import {
  ACCESS_COOKIE,
  CSRF_COOKIE,
  CSRF_HEADER,
  REFRESH_COOKIE,
  assertCookieModeOrigin,
  assertCsrfToken,
  carriesCredentials,
  clearTokenCookies,
  readAccessCookie,
  readRefreshCookie,
  setTokenCookies,
  wantsCookies,
} from './cookie-mode'
import { BASE_URL, expectProblem } from '../../test/helpers'

// Cookie mode (src/http/cookie-mode.ts) on a tiny app with withConfig(): one route per function.
// The test env's CORS_ORIGINS are https://app.example.com and http://localhost:5173 (vitest.config.ts);
// the app's own origin is BASE_URL's.

const OWN_ORIGIN = new URL(BASE_URL).origin
const CORS_ORIGIN = 'https://app.example.com'

const PAIR = {
  access_token: 'the-access-token',
  refresh_token: 'the-refresh-token',
  token_type: 'Bearer' as const,
  expires_in: 300,
  refresh_expires_in: 86_400,
}

const app = new Hono<AppEnv>()
app.use(withConfig())
app.post('/cookie-login', (c) => {
  assertCookieModeOrigin(c, c.var.config.corsOrigins)
  return c.body(null, 204)
})
app.post('/login/:sid', async (c) => c.json(await setTokenCookies(c, PAIR, c.req.param('sid'), c.var.config)))
app.post('/logout', (c) => {
  clearTokenCookies(c)
  return c.body(null, 204)
})
app.on(['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH', 'DELETE'], '/write/:sid', async (c) => {
  await assertCsrfToken(c, c.req.param('sid'), c.var.config)
  return c.body(null, 204)
})
app.get('/credentials', (c) => c.json(carriesCredentials(c)))
app.get('/cookies', (c) => c.json({ access: readAccessCookie(c) ?? null, refresh: readRefreshCookie(c) ?? null }))
app.get('/mode', (c) => c.json(wantsCookies(c)))
app.onError(onError)

function call(path: string, init: RequestInit = {}, workerEnv: Env = env): Promise<Response> {
  return Promise.resolve(app.request(`${BASE_URL}${path}`, init, workerEnv))
}

interface SetCookie {
  name: string
  value: string
  /** Attribute names lower-cased; flags (HttpOnly, Secure) map to ''. */
  attributes: Map<string, string>
}

function setCookiesOf(res: Response): Map<string, SetCookie> {
  const lines = (res.headers as Headers & { getSetCookie(): string[] }).getSetCookie()
  return new Map(
    lines.map((line) => {
      const [pair = '', ...parts] = line.split(';')
      const eq = pair.indexOf('=')
      const attributes = new Map(
        parts.map((part) => {
          const [key = '', ...rest] = part.trim().split('=')
          return [key.toLowerCase(), rest.join('=')] as const
        }),
      )
      return [pair.slice(0, eq).trim(), { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1), attributes }]
    }),
  )
}

interface Answer {
  token_type: string
  expires_in: number
  refresh_expires_in: number
  csrf_token: string
}

async function cookieLogin(sid: string, workerEnv: Env = env): Promise<{ res: Response; answer: Answer }> {
  const res = await call(`/login/${sid}`, { method: 'POST' }, workerEnv)
  expect(res.status).toBe(200)
  return { res, answer: (await res.clone().json()) as Answer }
}

async function csrfTokenOf(sid: string, workerEnv: Env = env): Promise<string> {
  return (await cookieLogin(sid, workerEnv)).answer.csrf_token
}

describe('assertCookieModeOrigin (login CSRF)', () => {
  const attempt = (headers: Record<string, string>) => call('/cookie-login', { method: 'POST', headers })

  it("lets the API's own origin and the configured CORS origins ask for cookies", async () => {
    for (const origin of [OWN_ORIGIN, CORS_ORIGIN, 'http://localhost:5173']) {
      expect((await attempt({ origin })).status, origin).toBe(204)
      expect((await attempt({ origin, 'sec-fetch-site': 'same-site' })).status, origin).toBe(204)
    }
    expect((await attempt({ 'sec-fetch-site': 'same-origin' })).status).toBe(204)
  })

  it('lets a client that sends neither Origin nor Sec-Fetch-Site through (not a browser)', async () => {
    expect((await attempt({})).status).toBe(204)
    expect((await attempt({ 'sec-fetch-site': 'none' })).status).toBe(204)
  })

  it('refuses a foreign origin, including near misses of a configured one: 403 forbidden', async () => {
    for (const origin of [
      'https://evil.example',
      'null',
      'http://app.example.com',
      'https://app.example.com:8443',
      'https://app.example.com.evil.example',
      `${CORS_ORIGIN}/`,
      'http://edgepress.test',
    ]) {
      await expectProblem(await attempt({ origin }), 403, 'forbidden')
    }
  })

  it('refuses a request the browser marks cross-site, whatever its Origin', async () => {
    await expectProblem(await attempt({ 'sec-fetch-site': 'cross-site' }), 403, 'forbidden')
    await expectProblem(await attempt({ origin: CORS_ORIGIN, 'sec-fetch-site': 'cross-site' }), 403, 'forbidden')
  })
})

describe('setTokenCookies', () => {
  it('sets the three __Host- cookies: Secure, Path=/, no Domain, the configured SameSite', async () => {
    const { res } = await cookieLogin(crypto.randomUUID())
    const cookies = setCookiesOf(res)
    expect([...cookies.keys()].sort()).toEqual([ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE].sort())
    for (const cookie of cookies.values()) {
      expect(cookie.name.startsWith('__Host-'), cookie.name).toBe(true)
      expect(cookie.attributes.get('path'), cookie.name).toBe('/')
      expect(cookie.attributes.has('secure'), cookie.name).toBe(true)
      expect(cookie.attributes.has('domain'), cookie.name).toBe(false)
      expect(cookie.attributes.get('samesite'), cookie.name).toBe('Strict')
    }
  })

  it('keeps the tokens from scripts (HttpOnly) and lets them read the CSRF token', async () => {
    const { res, answer } = await cookieLogin(crypto.randomUUID())
    const cookies = setCookiesOf(res)
    expect(cookies.get(ACCESS_COOKIE)).toMatchObject({ value: PAIR.access_token })
    expect(cookies.get(REFRESH_COOKIE)).toMatchObject({ value: PAIR.refresh_token })
    expect(cookies.get(ACCESS_COOKIE)?.attributes.has('httponly')).toBe(true)
    expect(cookies.get(REFRESH_COOKIE)?.attributes.has('httponly')).toBe(true)
    expect(cookies.get(CSRF_COOKIE)?.attributes.has('httponly')).toBe(false)
    expect(cookies.get(CSRF_COOKIE)?.value).toBe(answer.csrf_token)
  })

  it('gives each cookie the lifetime of what it carries (Max-Age)', async () => {
    const cookies = setCookiesOf((await cookieLogin(crypto.randomUUID())).res)
    expect(cookies.get(ACCESS_COOKIE)?.attributes.get('max-age')).toBe(String(PAIR.expires_in))
    expect(cookies.get(REFRESH_COOKIE)?.attributes.get('max-age')).toBe(String(PAIR.refresh_expires_in))
    expect(cookies.get(CSRF_COOKIE)?.attributes.get('max-age')).toBe(String(PAIR.refresh_expires_in))
  })

  it('answers with the lifetimes and the CSRF token instead of the tokens, not to be stored', async () => {
    const { res, answer } = await cookieLogin(crypto.randomUUID())
    expect(answer).toEqual({
      token_type: 'Cookie',
      expires_in: PAIR.expires_in,
      refresh_expires_in: PAIR.refresh_expires_in,
      csrf_token: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/),
    })
    expect(JSON.stringify(answer)).not.toContain(PAIR.access_token)
    expect(JSON.stringify(answer)).not.toContain(PAIR.refresh_token)
    expect(res.headers.get('cache-control')).toBe('no-store')
  })

  it('uses COOKIE_SAMESITE', async () => {
    for (const sameSite of ['Lax', 'None']) {
      const workerEnv = { ...env, COOKIE_SAMESITE: sameSite } as Env
      const cookies = setCookiesOf((await cookieLogin(crypto.randomUUID(), workerEnv)).res)
      for (const cookie of cookies.values()) expect(cookie.attributes.get('samesite'), sameSite).toBe(sameSite)
    }
  })

  it('hands out one CSRF token per login session: the same for a session, another for another', async () => {
    const sid = crypto.randomUUID()
    expect(await csrfTokenOf(sid)).toBe(await csrfTokenOf(sid))
    expect(await csrfTokenOf(crypto.randomUUID())).not.toBe(await csrfTokenOf(sid))
  })
})

describe('clearTokenCookies', () => {
  it('expires the three __Host- cookies', async () => {
    const cookies = setCookiesOf(await call('/logout', { method: 'POST' }))
    expect([...cookies.keys()].sort()).toEqual([ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE].sort())
    for (const cookie of cookies.values()) {
      expect(cookie.value, cookie.name).toBe('')
      expect(cookie.attributes.get('max-age'), cookie.name).toBe('0')
      expect(cookie.attributes.get('path'), cookie.name).toBe('/')
      expect(cookie.attributes.has('secure'), cookie.name).toBe(true)
    }
  })
})

describe('assertCsrfToken', () => {
  const write = (method: string, sid: string, token?: string, workerEnv: Env = env) =>
    call(`/write/${sid}`, { method, headers: token === undefined ? {} : { [CSRF_HEADER]: token } }, workerEnv)

  it('asks nothing of reads', async () => {
    for (const method of ['GET', 'HEAD', 'OPTIONS']) {
      expect((await write(method, crypto.randomUUID())).status, method).toBe(204)
    }
  })

  it("accepts every kind of write that carries the session's CSRF token", async () => {
    const sid = crypto.randomUUID()
    const token = await csrfTokenOf(sid)
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      expect((await write(method, sid, token)).status, method).toBe(204)
    }
  })

  it('refuses a write without the token, with an empty one, or with the token of another session: 403', async () => {
    const sid = crypto.randomUUID()
    for (const token of [undefined, '', await csrfTokenOf(crypto.randomUUID())]) {
      const problem = await expectProblem(await write('POST', sid, token), 403, 'forbidden')
      expect(problem.detail).toContain(CSRF_HEADER)
    }
  })

  it('refuses a token made under another JWT_SECRET', async () => {
    const sid = crypto.randomUUID()
    const otherEnv = { ...env, JWT_SECRET: `${env.JWT_SECRET}-of-another-deployment` } as Env
    const foreign = await csrfTokenOf(sid, otherEnv)
    expect(foreign).not.toBe(await csrfTokenOf(sid))
    await expectProblem(await write('POST', sid, foreign), 403, 'forbidden')
  })

  it('refuses another spelling of the right token, and anything too long to be one', async () => {
    const sid = crypto.randomUUID()
    const token = await csrfTokenOf(sid)
    // 16 bytes take 22 base64url characters, whose last 4 bits are unused: setting one of them
    // spells the same bytes differently.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const last = alphabet.indexOf(token.at(-1)!)
    const respelled = token.slice(0, -1) + alphabet[last | 1]
    expect(fromBase64Url(respelled)).toEqual(fromBase64Url(token))
    for (const bad of [respelled, `${token}==`, `${token}${'A'.repeat(60)}`, token.toUpperCase()]) {
      await expectProblem(await write('POST', sid, bad), 403, 'forbidden')
    }
  })
})

describe('carriesCredentials', () => {
  const carries = async (headers: Record<string, string>) => (await call('/credentials', { headers })).json()

  it('is true for an Authorization header of any kind, or any cookie of ours', async () => {
    expect(await carries({ authorization: 'Bearer x' })).toBe(true)
    expect(await carries({ authorization: 'Basic dXNlcjpwYXNz' })).toBe(true)
    expect(await carries({ cookie: `${ACCESS_COOKIE}=expired-token` })).toBe(true)
    expect(await carries({ cookie: `theme=dark; ${REFRESH_COOKIE}=r` })).toBe(true)
    expect(await carries({ cookie: `${CSRF_COOKIE}=c` })).toBe(true)
  })

  it('is false without either, or with cookies that are not ours', async () => {
    expect(await carries({})).toBe(false)
    expect(await carries({ cookie: 'theme=dark; edgepress-access=not-host-prefixed' })).toBe(false)
  })
})

describe('reading the token cookies', () => {
  const read = async (cookie: string) => (await call('/cookies', { headers: { cookie } })).json()

  it('reads each token from its own __Host- cookie', async () => {
    expect(await read(`${ACCESS_COOKIE}=a; ${REFRESH_COOKIE}=r`)).toEqual({ access: 'a', refresh: 'r' })
    expect(await read(`${REFRESH_COOKIE}=r`)).toEqual({ access: null, refresh: 'r' })
  })

  it('ignores the same names without the __Host- prefix, which any subdomain could set', async () => {
    expect(await read('edgepress-access=a; edgepress-refresh=r')).toEqual({ access: null, refresh: null })
  })
})

describe('wantsCookies', () => {
  it('is true for ?mode=cookie only', async () => {
    expect(await (await call('/mode?mode=cookie')).json()).toBe(true)
    for (const query of ['', '?mode=Cookie', '?mode=json', '?cookie=1']) {
      expect(await (await call(`/mode${query}`)).json(), query).toBe(false)
    }
  })
})
