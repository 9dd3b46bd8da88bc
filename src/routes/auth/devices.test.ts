import { env } from 'cloudflare:workers'
import { decodeJwt } from 'jose'
import { describe, it } from 'vitest'
import { BASE_URL, api, expectProblem, fetchWorker, login, registerAndLogin, registerUser } from '../../../test/helpers'
import type { RegisteredUser, TokenPair } from '../../../test/helpers'

// Sessions as devices: GET /auth/sessions and DELETE /auth/sessions/{id}, and what login and
// refresh record for them (a label from the User-Agent, country and colo from request.cf).

const FIREFOX_MAC = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0'
const CHROME_ANDROID =
  'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36'
const ACCESS_COOKIE = '__Host-edgepress-access'
// The KV key of a revoked session; src/sessions/revocation-keys.ts owns the prefix.
const revokedSessionKey = (sid: string): string => `sid:${sid}`

interface Place {
  country: string | null
  colo: string | null
}

interface DeviceSession {
  id: string
  created_at: string
  last_used_at: string | null
  device: string
  login: Place
  last: Place | null
  current: boolean
}

/** Workerd lets a caller set request.cf, as Cloudflare's edge does in production. */
type CfInit = RequestInit & { cf?: Record<string, unknown> }

function post(
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
  cf?: Record<string, unknown>,
): Promise<Response> {
  const init: CfInit = {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    ...(cf === undefined ? {} : { cf }),
  }
  return fetchWorker(`${BASE_URL}/api/v1${path}`, init)
}

async function loginFrom(
  user: RegisteredUser,
  userAgent: string,
  cf?: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<TokenPair> {
  const res = await post(
    '/auth/token',
    { username: user.username, password: user.password },
    { 'user-agent': userAgent, ...headers },
    cf,
  )
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as TokenPair
}

function refreshFrom(refreshToken: string, cf?: Record<string, unknown>): Promise<Response> {
  return post('/auth/token/refresh', { refresh_token: refreshToken }, {}, cf)
}

async function listSessions(accessToken: string): Promise<DeviceSession[]> {
  const res = await api('GET', '/auth/sessions', undefined, accessToken)
  if (res.status !== 200) throw new Error(`list failed: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { results: DeviceSession[] }).results
}

function endSession(id: string, accessToken: string): Promise<Response> {
  return api('DELETE', `/auth/sessions/${encodeURIComponent(id)}`, undefined, accessToken)
}

function sidOf(token: string): string {
  return decodeJwt(token).sid as string
}

function me(accessToken: string): Promise<Response> {
  return api('GET', '/users/me', undefined, accessToken)
}

function withoutRequestId(problem: Record<string, unknown>): Record<string, unknown> {
  const { request_id: _requestId, ...rest } = problem
  return rest
}

describe('GET /api/v1/auth/sessions', () => {
  it('lists each signed-in device, newest activity first, marking the caller', async ({ expect }) => {
    const user = await registerUser()
    const laptop = await loginFrom(user, FIREFOX_MAC, { country: 'DE', colo: 'FRA' })
    const phone = await loginFrom(user, CHROME_ANDROID)

    const res = await api('GET', '/auth/sessions', undefined, phone.access_token)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('private, no-store')
    const { results } = (await res.json()) as { results: DeviceSession[] }
    expect(results).toEqual([
      {
        id: sidOf(phone.access_token),
        created_at: expect.any(String),
        last_used_at: null,
        device: 'Chrome on Android',
        // No request.cf country or colo (as locally): unknown, not invented.
        login: { country: null, colo: null },
        last: null,
        current: true,
      },
      {
        id: sidOf(laptop.access_token),
        created_at: expect.any(String),
        last_used_at: null,
        device: 'Firefox on macOS',
        login: { country: 'DE', colo: 'FRA' },
        last: null,
        current: false,
      },
    ])
    expect(Date.parse(results[0]!.created_at)).toBeGreaterThanOrEqual(Date.parse(results[1]!.created_at))

    // The laptop's token sees the same list with itself as current.
    const fromLaptop = await listSessions(laptop.access_token)
    expect(fromLaptop.map((session) => [session.device, session.current])).toEqual([
      ['Chrome on Android', false],
      ['Firefox on macOS', true],
    ])
  })

  it('moves a device to the top when it refreshes, recording when and where', async ({ expect }) => {
    const user = await registerUser()
    const laptop = await loginFrom(user, FIREFOX_MAC, { country: 'DE', colo: 'FRA' })
    const phone = await loginFrom(user, CHROME_ANDROID)
    const before = Date.now()
    const refreshed = await refreshFrom(laptop.refresh_token, { country: 'US', colo: 'SJC' })
    expect(refreshed.status).toBe(200)

    const sessions = await listSessions(phone.access_token)
    expect(sessions.map((session) => session.device)).toEqual(['Firefox on macOS', 'Chrome on Android'])
    const [top] = sessions
    expect(Date.parse(top!.last_used_at!)).toBeGreaterThanOrEqual(before - 1000)
    expect(top!.login).toEqual({ country: 'DE', colo: 'FRA' })
    expect(top!.last).toEqual({ country: 'US', colo: 'SJC' })

    // A refresh where request.cf says nothing records "unknown", not the previous place.
    const next = (await refreshed.json()) as TokenPair
    expect((await refreshFrom(next.refresh_token)).status).toBe(200)
    expect((await listSessions(phone.access_token))[0]!.last).toEqual({ country: null, colo: null })
  })

  it('shows only the live sessions of the caller', async ({ expect }) => {
    const user = await registerUser()
    const kept = await login(user)
    const loggedOut = await login(user)
    const expired = await login(user)
    const tooOld = await login(user)
    const { tokens: someoneElse } = await registerAndLogin()
    expect((await api('POST', '/auth/logout', undefined, loggedOut.access_token)).status).toBe(204)
    await env.DB.prepare('UPDATE sessions SET refresh_expires_at = ? WHERE sid = ?')
      .bind(Date.now() - 1000, sidOf(expired.access_token))
      .run()
    await env.DB.prepare('UPDATE sessions SET created_at = ? WHERE sid = ?')
      .bind(Date.now() - 400 * 86_400_000, sidOf(tooOld.access_token))
      .run()

    const ids = (await listSessions(kept.access_token)).map((session) => session.id)
    expect(ids).toEqual([sidOf(kept.access_token)])
    expect(ids).not.toContain(sidOf(someoneElse.access_token))
  })

  it('keeps only well-formed request.cf codes', async ({ expect }) => {
    const user = await registerUser()
    const tor = await loginFrom(user, 'curl/8.8.0', { country: 'T1', colo: 'fra' })
    await loginFrom(user, 'curl/8.8.0', { country: 'XX', colo: 'FRANKFURT' })
    await loginFrom(user, 'curl/8.8.0', { country: 42, colo: ['FRA'] })
    const sessions = await listSessions(tor.access_token)
    expect(sessions).toHaveLength(3)
    for (const session of sessions) {
      expect(session.device).toBe('curl')
      expect(session.login).toEqual({ country: null, colo: null })
    }
  })

  it('records the device of the session a password change starts', async ({ expect }) => {
    const user = await registerUser()
    const tokens = await loginFrom(user, CHROME_ANDROID)
    const res = await post(
      '/auth/password/change',
      { old_password: user.password, new_password: 'a changed password' },
      { authorization: `Bearer ${tokens.access_token}`, 'user-agent': FIREFOX_MAC },
      { country: 'FR', colo: 'CDG' },
    )
    expect(res.status).toBe(200)
    const next = (await res.json()) as TokenPair
    expect(await listSessions(next.access_token)).toEqual([
      expect.objectContaining({
        id: sidOf(next.access_token),
        device: 'Firefox on macOS',
        login: { country: 'FR', colo: 'CDG' },
        current: true,
      }),
    ])
  })

  it('labels sessions from before devices were recorded as unknown', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    await env.DB.prepare('UPDATE sessions SET device_label = NULL WHERE sid = ?').bind(sidOf(tokens.access_token)).run()
    expect((await listSessions(tokens.access_token))[0]!.device).toBe('Unknown device')
  })

  it('needs an access token', async () => {
    await expectProblem(await api('GET', '/auth/sessions'), 401, 'not_authenticated')
    const { tokens } = await registerAndLogin()
    await expectProblem(await api('GET', '/auth/sessions', undefined, tokens.refresh_token), 401, 'token_invalid')
  })
})

describe('DELETE /api/v1/auth/sessions/{id}', () => {
  it('signs out one device while the other keeps working', async ({ expect }) => {
    const user = await registerUser()
    const laptop = await loginFrom(user, FIREFOX_MAC)
    const phone = await loginFrom(user, CHROME_ANDROID)

    const res = await endSession(sidOf(phone.access_token), laptop.access_token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')

    // The phone: its access token and its refresh token stop at once (D1 row and KV key).
    await expectProblem(await me(phone.access_token), 401, 'token_revoked')
    await expectProblem(await refreshFrom(phone.refresh_token), 401, 'token_revoked')
    expect(await env.REVOKED_TOKENS.get(revokedSessionKey(sidOf(phone.access_token)))).not.toBeNull()
    const row = await env.DB.prepare('SELECT revoked_at FROM sessions WHERE sid = ?')
      .bind(sidOf(phone.access_token))
      .first<{ revoked_at: number | null }>()
    expect(row!.revoked_at).not.toBeNull()

    // The laptop: untouched.
    expect((await me(laptop.access_token)).status).toBe(200)
    expect((await refreshFrom(laptop.refresh_token)).status).toBe(200)
    expect((await listSessions(laptop.access_token)).map((session) => session.device)).toEqual(['Firefox on macOS'])
  })

  it("answers the same 404 for another user's session, an unknown id and an ended session", async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const { tokens: victim } = await registerAndLogin()
    const user = await registerUser()
    const first = await login(user)
    const ended = await login(user)
    expect((await endSession(sidOf(ended.access_token), first.access_token)).status).toBe(204)

    const problems = [
      await expectProblem(await endSession(sidOf(victim.access_token), tokens.access_token), 404, 'not_found'),
      await expectProblem(await endSession(crypto.randomUUID(), tokens.access_token), 404, 'not_found'),
      await expectProblem(await endSession('not-a-session', tokens.access_token), 404, 'not_found'),
      await expectProblem(await endSession(sidOf(ended.access_token), first.access_token), 404, 'not_found'),
    ]
    const bodies = problems.map((problem) => JSON.stringify(withoutRequestId(problem)))
    expect(new Set(bodies).size).toBe(1)

    // The other user's session was not touched: no D1 change, no KV key.
    expect((await me(victim.access_token)).status).toBe(200)
    expect(await env.REVOKED_TOKENS.get(revokedSessionKey(sidOf(victim.access_token)))).toBeNull()
    expect((await refreshFrom(victim.refresh_token)).status).toBe(200)
  })

  it("ends the caller's own session like logout", async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    expect((await endSession(sidOf(tokens.access_token), tokens.access_token)).status).toBe(204)
    await expectProblem(await me(tokens.access_token), 401, 'token_revoked')
    await expectProblem(await refreshFrom(tokens.refresh_token), 401, 'token_revoked')
  })

  it('clears the cookies when a cookie session ends itself, and needs the CSRF token', async ({ expect }) => {
    const user = await registerUser()
    const res = await post('/auth/token?mode=cookie', { username: user.username, password: user.password })
    expect(res.status).toBe(200)
    const { csrf_token: csrfToken } = (await res.json()) as { csrf_token: string }
    const setCookies = (res.headers as Headers & { getSetCookie(): string[] }).getSetCookie()
    const cookie = setCookies.map((line) => line.split(';')[0]).join('; ')
    const access = /__Host-edgepress-access=([^;]+)/.exec(cookie)![1]!
    const path = `/auth/sessions/${sidOf(access)}`

    await expectProblem(await api('DELETE', path, undefined, undefined, { cookie }), 403, 'forbidden')
    const ended = await api('DELETE', path, undefined, undefined, { cookie, 'x-csrf-token': csrfToken })
    expect(ended.status).toBe(204)
    const cleared = (ended.headers as Headers & { getSetCookie(): string[] }).getSetCookie()
    expect(cleared.some((line) => line.startsWith(`${ACCESS_COOKIE}=;`) && /max-age=0/i.test(line))).toBe(true)
    await expectProblem(await api('GET', '/users/me', undefined, undefined, { cookie }), 401, 'token_revoked')
  })

  it("does not clear a cookie session's cookies when it ends another device", async ({ expect }) => {
    const user = await registerUser()
    const other = await login(user)
    const res = await post('/auth/token?mode=cookie', { username: user.username, password: user.password })
    const { csrf_token: csrfToken } = (await res.json()) as { csrf_token: string }
    const cookie = (res.headers as Headers & { getSetCookie(): string[] })
      .getSetCookie()
      .map((line) => line.split(';')[0])
      .join('; ')
    const ended = await api('DELETE', `/auth/sessions/${sidOf(other.access_token)}`, undefined, undefined, {
      cookie,
      'x-csrf-token': csrfToken,
    })
    expect(ended.status).toBe(204)
    expect((ended.headers as Headers & { getSetCookie(): string[] }).getSetCookie()).toEqual([])
    expect((await api('GET', '/users/me', undefined, undefined, { cookie })).status).toBe(200)
  })

  it('needs an access token', async () => {
    await expectProblem(await api('DELETE', `/auth/sessions/${crypto.randomUUID()}`), 401, 'not_authenticated')
  })
})

describe('what a session stores of a device', () => {
  it('keeps a label, a country and a colo: never the User-Agent or an IP address', async ({ expect }) => {
    const user = await registerUser()
    const marker = `marker-${crypto.randomUUID()}`
    const userAgent = `${FIREFOX_MAC} ${marker}`
    const ip = '203.0.113.77'
    const tokens = await loginFrom(
      user,
      userAgent,
      { country: 'DE', colo: 'FRA', clientTcpRtt: 12 },
      {
        'cf-connecting-ip': ip,
        'x-forwarded-for': `${ip}, 198.51.100.9`,
        'x-real-ip': ip,
      },
    )
    const refreshed = await post(
      '/auth/token/refresh',
      { refresh_token: tokens.refresh_token },
      { 'user-agent': userAgent, 'cf-connecting-ip': ip },
      { country: 'DE', colo: 'FRA' },
    )
    expect(refreshed.status).toBe(200)

    const row = await env.DB.prepare('SELECT * FROM sessions WHERE sid = ?')
      .bind(sidOf(tokens.access_token))
      .first<Record<string, unknown>>()
    expect(row).toMatchObject({
      device_label: 'Firefox on macOS',
      login_country: 'DE',
      login_colo: 'FRA',
      last_country: 'DE',
      last_colo: 'FRA',
    })
    expect(row!.last_used_at).toEqual(expect.any(Number))
    const stored = JSON.stringify(row)
    for (const secret of [marker, 'Mozilla', 'Gecko', ip, '198.51.100.9', '203.0.113'])
      expect(stored).not.toContain(secret)

    // Nor does any response about it.
    const listed = await (await api('GET', '/auth/sessions', undefined, tokens.access_token)).text()
    for (const secret of [marker, 'Mozilla', ip]) expect(listed).not.toContain(secret)
  })
})

// ---------------------------------------------------------------------------------------------
// Regression: a session past SESSION_MAX_AGE can no longer refresh (so it is not listed), but the
// access token of its last refresh lives on for up to ACCESS_TOKEN_TTL: it can still be ended.

const SESSION_MAX_AGE_MS = 30 * 86_400_000

/** Moves a session's start back so that it is `pastMaxAgeMs` past SESSION_MAX_AGE. */
async function ageSession(sid: string, pastMaxAgeMs: number): Promise<void> {
  await env.DB.prepare('UPDATE sessions SET created_at = ? WHERE sid = ?')
    .bind(Date.now() - SESSION_MAX_AGE_MS - pastMaxAgeMs, sid)
    .run()
}

describe('DELETE /api/v1/auth/sessions/{id} for a session past SESSION_MAX_AGE', () => {
  it('is not listed and cannot refresh, yet its live access token is ended by another device (204)', async ({
    expect,
  }) => {
    const user = await registerUser()
    const laptop = await loginFrom(user, FIREFOX_MAC)
    const phone = await loginFrom(user, CHROME_ANDROID)
    const phoneSid = sidOf(phone.access_token)
    await ageSession(phoneSid, 60_000)

    // Its access token still works; the device list leaves it out, for it cannot refresh.
    expect((await me(phone.access_token)).status).toBe(200)
    expect((await listSessions(laptop.access_token)).map((session) => session.id)).toEqual([sidOf(laptop.access_token)])
    await expectProblem(await refreshFrom(phone.refresh_token), 401, 'token_expired')

    const res = await endSession(phoneSid, laptop.access_token)
    expect(res.status).toBe(204)
    await expectProblem(await me(phone.access_token), 401, 'token_revoked')
    expect(await env.REVOKED_TOKENS.get(revokedSessionKey(phoneSid))).not.toBeNull()
    const row = await env.DB.prepare('SELECT revoked_at FROM sessions WHERE sid = ?')
      .bind(phoneSid)
      .first<{ revoked_at: number | null }>()
    expect(row!.revoked_at).not.toBeNull()
    // Ended once: a second DELETE is the 404 of an ended session.
    await expectProblem(await endSession(phoneSid, laptop.access_token), 404, 'not_found')
    // The laptop is untouched.
    expect((await me(laptop.access_token)).status).toBe(200)
    expect((await refreshFrom(laptop.refresh_token)).status).toBe(200)
  })

  it('the aged session can end itself with its own access token', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const sid = sidOf(tokens.access_token)
    await ageSession(sid, 60_000)
    expect((await me(tokens.access_token)).status).toBe(200)
    expect((await endSession(sid, tokens.access_token)).status).toBe(204)
    await expectProblem(await me(tokens.access_token), 401, 'token_revoked')
  })
})
