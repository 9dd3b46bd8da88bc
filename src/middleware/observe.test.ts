/// <reference types="vite/client" />
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { MockInstance } from 'vitest'
import worker from '../index'
import wranglerToml from '../../wrangler.toml?raw'
import { BASE_URL, api, mintToken, registerAndLogin, tokenFromEmail, uniqueName } from '../../test/helpers'
import type { TokenPair } from '../../test/helpers'

// Server-Timing on every response, and the one-line-per-request JSON log (src/middleware/observe.ts).
// The pool runs the worker with LOG_REQUESTS 'false'; the log tests call the worker's fetch
// directly with an env that turns it on, and read console.log.

interface RequestLine {
  level: string
  message: string
  request_id: string
  method: string
  route: string
  status: number
  duration_ms: number
  d1_ms: number
  kv_ms: number
  user_id: string | number | null
}

type LogRequests = 'true' | 'false' | undefined

/** Calls the worker's fetch with LOG_REQUESTS set, and lets its background work (email) finish. */
async function call(path: string, init: RequestInit = {}, logRequests: LogRequests = 'true'): Promise<Response> {
  const ctx = createExecutionContext()
  const res = await worker.fetch(new Request(`${BASE_URL}${path}`, init), { ...env, LOG_REQUESTS: logRequests }, ctx)
  await waitOnExecutionContext(ctx)
  return res
}

function jsonInit(method: string, body: unknown, token?: string): RequestInit {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  return { method, headers, body: JSON.stringify(body) }
}

function bearer(token: string): RequestInit {
  return { headers: { authorization: `Bearer ${token}` } }
}

let spies: MockInstance[] = []

/** Captures (and silences) console.log, console.info, console.warn and console.error. */
function captureConsole(): { lines: () => string[]; requestLines: () => RequestLine[] } {
  spies = (['log', 'info', 'warn', 'error'] as const).map((level) =>
    vi.spyOn(console, level).mockImplementation(() => undefined),
  )
  const lines = () => spies.flatMap((spy) => spy.mock.calls.map((args) => args.map(String).join(' ')))
  const requestLines = () =>
    lines()
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Partial<RequestLine>)
      .filter((entry): entry is RequestLine => entry.message === 'request')
  return { lines, requestLines }
}

afterEach(() => {
  for (const spy of spies) spy.mockRestore()
  spies = []
})

/** The one log line of the request that got `res`. */
function lineOf(lines: RequestLine[], res: Response): RequestLine {
  const id = res.headers.get('x-request-id')
  expect(id).toBeTruthy()
  const matching = lines.filter((line) => line.request_id === id)
  expect(matching, `log lines for ${id}`).toHaveLength(1)
  return matching[0]!
}

/**
 * Server-Timing as `{name: dur}` for the entries with a duration; every entry must be
 * `name[;dur=<number>][;desc="…"]`.
 */
function serverTiming(res: Response): Record<string, number> {
  const header = res.headers.get('server-timing')
  expect(header, `Server-Timing on ${res.status}`).not.toBeNull()
  const entries: Record<string, number> = {}
  for (const part of header!.split(',')) {
    const match = /^\s*([A-Za-z0-9_-]+)(?:;dur=([^\s;,]+))?(?:;desc="[^"]*")?\s*$/.exec(part)
    expect(match, `Server-Timing entry "${part}"`).not.toBeNull()
    if (match![2] !== undefined) entries[match![1]!] = Number(match![2])
  }
  return entries
}

function expectDurations(res: Response, label: string): Record<string, number> {
  const timing = serverTiming(res)
  expect(Object.keys(timing).sort(), label).toEqual(['cache', 'd1', 'kv', 'ratelimit', 'total'])
  for (const [name, dur] of Object.entries(timing)) {
    expect(Number.isFinite(dur), `${label}: ${name}`).toBe(true)
    expect(dur, `${label}: ${name}`).toBeGreaterThanOrEqual(0)
  }
  return timing
}

/** A D1 query that takes a few real milliseconds: I/O to wait on, without sleeping. */
async function slowIo(): Promise<void> {
  await env.DB.prepare(
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT count(*) AS c FROM n',
  ).first()
}

/** REVOKED_TOKENS whose reads first wait on slow I/O (on the raw D1 binding, so not timed as D1). */
function slowKv(kv: KVNamespace): KVNamespace {
  return new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (typeof value !== 'function') return value
      if (property === 'get') {
        return async (...args: unknown[]) => {
          await slowIo()
          return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
        }
      }
      return (value as (...a: unknown[]) => unknown).bind(target)
    },
  })
}

describe('Server-Timing', () => {
  it('is on every response, successful or not, with finite, non-negative d1, kv and total durations', async () => {
    const { user, tokens } = await registerAndLogin()
    const created = await api('POST', '/posts', { title: 'timed', body: 'timed' }, tokens.access_token)
    const post = (await created.json()) as { id: number }
    await api('GET', `/posts/${post.id}`)

    const responses: [string, Response][] = [
      ['health', await api('GET', '/health')],
      ['post list', await api('GET', '/posts?limit=5')],
      ['edge-cache hit', await api('GET', `/posts/${post.id}`)],
      ['created', created],
      ['profile', await api('GET', `/users/${user.id}`)],
      ['me', await api('GET', '/users/me', undefined, tokens.access_token)],
      ['missing post', await api('GET', '/posts/987654321')],
      ['unknown route', await api('GET', '/no-such-route')],
      ['wrong method', await api('DELETE', '/health')],
      [
        'bad credentials',
        await api('POST', '/auth/token', { username: uniqueName('nobody'), password: 'wrong password' }),
      ],
      ['no token', await api('POST', '/posts', { title: 't', body: 'b' })],
      ['validation', await api('POST', '/auth/register', { username: 'x' })],
      ['too large', await api('POST', '/posts', 'x'.repeat(70_000), tokens.access_token)],
      [
        'preflight',
        await api('OPTIONS', '/posts', undefined, undefined, {
          origin: 'https://app.example.com',
          'access-control-request-method': 'POST',
        }),
      ],
      ['openapi', await api('GET', '/openapi.json')],
    ]

    expect(responses.map(([label, res]) => `${label} ${res.status}`)).toEqual([
      'health 200',
      'post list 200',
      'edge-cache hit 200',
      'created 201',
      'profile 200',
      'me 200',
      'missing post 404',
      'unknown route 404',
      'wrong method 405',
      'bad credentials 401',
      'no token 401',
      'validation 400',
      'too large 413',
      'preflight 204',
      'openapi 200',
    ])
    expect(responses[2]![1].headers.get('x-edge-cache')).toBe('HIT')
    for (const [label, res] of responses) {
      expectDurations(res, label)
      if (!res.bodyUsed) await res.body?.cancel()
    }
  })

  it('measures KV and D1 on an authenticated GET /users/me', async () => {
    const { tokens } = await registerAndLogin()

    const me = await api('GET', '/users/me', undefined, tokens.access_token)
    expect(me.status).toBe(200)
    const timing = expectDurations(me, 'GET /users/me')
    // Each figure is rounded to 0.1 ms; neither wait can exceed the whole request.
    expect(timing.total).toBeGreaterThanOrEqual(timing.d1! - 0.1)
    expect(timing.total).toBeGreaterThanOrEqual(timing.kv! - 0.1)
  })

  it('puts the time spent waiting on KV under kv, not d1', async () => {
    const { tokens } = await registerAndLogin()
    const ctx = createExecutionContext()
    const request = new Request(`${BASE_URL}/api/v1/users/me`, bearer(tokens.access_token))

    const me = await worker.fetch(request, { ...env, REVOKED_TOKENS: slowKv(env.REVOKED_TOKENS) }, ctx)
    await waitOnExecutionContext(ctx)

    expect(me.status).toBe(200)
    const timing = expectDurations(me, 'GET /users/me with slow KV')
    expect(timing.kv).toBeGreaterThan(0)
    expect(timing.total).toBeGreaterThanOrEqual(timing.kv!)
  })
})

describe('request log (LOG_REQUESTS=true)', () => {
  it('writes one JSON line per request: id, method, route pattern, status, durations and user', async () => {
    const log = captureConsole()
    const username = uniqueName('logged')
    const password = `pw-${crypto.randomUUID()}`
    const registered = await call(
      '/api/v1/auth/register',
      jsonInit('POST', { username, email: `${username}@example.com`, password }),
    )
    const user = (await registered.json()) as { id: number }
    const loggedIn = await call('/api/v1/auth/token', jsonInit('POST', { username, password }))
    const { access_token: token } = (await loggedIn.json()) as TokenPair
    const created = await call('/api/v1/posts', jsonInit('POST', { title: 'logged', body: 'logged' }, token))
    const post = (await created.json()) as { id: number }
    const read = await call(`/api/v1/posts/${post.id}`, {
      headers: { 'x-request-id': `own-id-${crypto.randomUUID()}` },
    })
    const listed = await call(`/api/v1/posts?author=${user.id}&q=needle&limit=3`)
    const me = await call('/api/v1/users/me', bearer(token))
    const profile = await call(`/api/v1/users/${user.id}`)
    const patched = await call(`/api/v1/posts/${post.id}`, jsonInit('PATCH', { title: 'renamed' }, token))
    const unauthenticated = await call('/api/v1/users/me')
    const missing = await call('/api/v1/posts/987654321')

    const lines = log.requestLines()
    expect(lines).toHaveLength(10)
    const expected: [Response, string, string, number, string | null][] = [
      [registered, 'POST', '/api/v1/auth/register', 201, null],
      [loggedIn, 'POST', '/api/v1/auth/token', 200, null],
      [created, 'POST', '/api/v1/posts', 201, String(user.id)],
      [read, 'GET', '/api/v1/posts/:id', 200, null],
      [listed, 'GET', '/api/v1/posts', 200, null],
      [me, 'GET', '/api/v1/users/me', 200, String(user.id)],
      [profile, 'GET', '/api/v1/users/:id', 200, null],
      [patched, 'PATCH', '/api/v1/posts/:id', 200, String(user.id)],
      [unauthenticated, 'GET', '/api/v1/users/me', 401, null],
      [missing, 'GET', '/api/v1/posts/:id', 404, null],
    ]
    for (const [res, method, route, status, userId] of expected) {
      const line = lineOf(lines, res)
      const label = `${method} ${route} ${status}`
      expect(Object.keys(line).sort(), label).toEqual(
        [
          'd1_calls',
          'd1_ms',
          'duration_ms',
          'kv_calls',
          'kv_ms',
          'level',
          'message',
          'method',
          'request_id',
          'route',
          'rt',
          'status',
          'user_id',
        ].sort(),
      )
      expect(line, label).toMatchObject({ level: 'info', message: 'request', method, route, status })
      expect(line.user_id === null ? null : String(line.user_id), label).toBe(userId)
      for (const field of ['duration_ms', 'd1_ms', 'kv_ms'] as const) {
        expect(Number.isFinite(line[field]), `${label} ${field}`).toBe(true)
        expect(line[field], `${label} ${field}`).toBeGreaterThanOrEqual(0)
      }
    }
    // The client's own X-Request-Id is the one logged.
    expect(lineOf(lines, read).request_id).toBe(read.headers.get('x-request-id'))
    expect(read.headers.get('x-request-id')).toMatch(/^own-id-/)
    // The route is the pattern: no id, no query.
    expect(log.lines().some((line) => line.includes('needle'))).toBe(false)
  })

  it('records the time spent waiting on KV as kv_ms', async () => {
    const log = captureConsole()
    const { user, tokens } = await registerAndLogin()
    const ctx = createExecutionContext()
    const request = new Request(`${BASE_URL}/api/v1/users/me`, bearer(tokens.access_token))

    const me = await worker.fetch(
      request,
      { ...env, LOG_REQUESTS: 'true', REVOKED_TOKENS: slowKv(env.REVOKED_TOKENS) },
      ctx,
    )
    await waitOnExecutionContext(ctx)

    const line = lineOf(log.requestLines(), me)
    expect(line.kv_ms).toBeGreaterThan(0)
    expect(line.d1_ms).toBeGreaterThanOrEqual(0)
    expect(line.duration_ms).toBeGreaterThanOrEqual(line.kv_ms)
    expect(String(line.user_id)).toBe(String(user.id))
  })

  it('never logs a password, token, email address, password hash or the JWT secret', async () => {
    const log = captureConsole()
    const username = uniqueName('private')
    const email = `${username}@example.com`
    const password = `first-secret-${crypto.randomUUID()}`
    const wrongPassword = `wrong-secret-${crypto.randomUUID()}`
    const newPassword = `second-secret-${crypto.randomUUID()}`
    const responses: Response[] = []
    const send = async (path: string, init: RequestInit = {}) => {
      const res = await call(path, init)
      responses.push(res)
      return res
    }

    const registered = await send('/api/v1/auth/register', jsonInit('POST', { username, email, password }))
    expect(registered.status).toBe(201)
    const loggedIn = await send('/api/v1/auth/token', jsonInit('POST', { username: email, password }))
    const first = (await loggedIn.json()) as TokenPair
    const refreshed = await send('/api/v1/auth/token/refresh', jsonInit('POST', { refresh_token: first.refresh_token }))
    const second = (await refreshed.json()) as TokenPair
    expect((await send('/api/v1/users/me', bearer(second.access_token))).status).toBe(200)
    expect((await send('/api/v1/auth/token/verify', jsonInit('POST', { token: second.access_token }))).status).toBe(200)
    expect((await send('/api/v1/auth/token', jsonInit('POST', { username, password: wrongPassword }))).status).toBe(401)
    expect(
      (await send('/api/v1/auth/token', jsonInit('POST', { username: email.toUpperCase(), password: wrongPassword })))
        .status,
    ).toBe(401)
    const basic = btoa(`${username}:${wrongPassword}`)
    expect(
      (await send('/api/v1/auth/token', { method: 'POST', headers: { authorization: `Basic ${basic}` } })).status,
    ).toBe(401)
    expect(
      (await send('/api/v1/auth/token/refresh', jsonInit('POST', { refresh_token: first.refresh_token }))).status,
    ).toBe(200)
    expect((await send(`/api/v1/users/${encodeURIComponent(email)}`)).status).toBeGreaterThanOrEqual(400)
    expect((await send('/api/v1/auth/password/reset', jsonInit('POST', { email }))).status).toBe(202)
    const resetToken = await tokenFromEmail(email, 'reset-password')
    const confirm = await send(
      '/api/v1/auth/password/reset/confirm',
      jsonInit('POST', { token: resetToken, new_password: newPassword }),
    )
    expect(confirm.status).toBe(204)
    const again = await send('/api/v1/auth/token', jsonInit('POST', { username, password: newPassword }))
    const third = (await again.json()) as TokenPair
    expect(
      (await send('/api/v1/auth/logout', jsonInit('POST', { refresh_token: third.refresh_token }, third.access_token)))
        .status,
    ).toBe(204)
    const stale = await send('/api/v1/users/me', bearer(second.access_token))
    expect(stale.status).toBe(401)

    expect(log.requestLines()).toHaveLength(responses.length)
    const secrets: [string, string][] = [
      ['password', password],
      ['wrong password', wrongPassword],
      ['new password', newPassword],
      ['HTTP Basic credentials', basic],
      ['email address', email.toLowerCase()],
      ['password hash', 'pbkdf2'],
      ['JWT secret', env.JWT_SECRET],
      ['reset token', resetToken],
      ...[first, second, third].flatMap((pair, i): [string, string][] => [
        [`access token ${i}`, pair.access_token],
        [`refresh token ${i}`, pair.refresh_token],
      ]),
    ]
    // The local mail transport prints each email, link and token included, by contract (docs/API.md §
    // Email); every other line must hold none of these.
    const lines = log.lines().filter((line) => !line.startsWith('--- email ---'))
    expect(lines.length).toBeGreaterThanOrEqual(responses.length)
    for (const line of lines) {
      for (const [name, secret] of secrets) {
        expect(line.toLowerCase().includes(secret.toLowerCase()), `${name} in log line ${line.slice(0, 200)}`).toBe(
          false,
        )
      }
    }
  })

  it('is on by default when LOG_REQUESTS is not set', async () => {
    const log = captureConsole()
    const res = await call('/api/v1/health', {}, undefined)
    expect(lineOf(log.requestLines(), res)).toMatchObject({
      method: 'GET',
      route: '/api/v1/health',
      status: 200,
      user_id: null,
    })
  })
})

describe('request log (LOG_REQUESTS=false)', () => {
  it('logs no request line', async () => {
    const log = captureConsole()
    const token = await mintToken({ sub: '987654321' })
    const statuses = [
      (await call('/api/v1/health', {}, 'false')).status,
      (await call('/api/v1/posts', {}, 'false')).status,
      (await call('/api/v1/users/me', bearer(token), 'false')).status,
      (
        await call(
          '/api/v1/auth/token',
          jsonInit('POST', { username: uniqueName('nobody'), password: 'wrong password' }),
          'false',
        )
      ).status,
      (await call('/no-such-route', {}, 'false')).status,
      (await call('/api/v1/health', { method: 'DELETE' }, 'false')).status,
      (await api('GET', '/health')).status,
    ]

    expect(statuses).toEqual([200, 200, 401, 401, 404, 405, 200])
    expect(log.requestLines()).toEqual([])
  })

  it('logs no request line for responses made before the config is read (CORS preflight, body over 64 KiB)', async () => {
    const log = captureConsole()
    const preflight = await call(
      '/api/v1/posts',
      { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } },
      'false',
    )
    const tooLarge = await call(
      '/api/v1/posts',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(70_000) },
      'false',
    )

    expect([preflight.status, tooLarge.status]).toEqual([204, 413])
    expect(log.requestLines()).toEqual([])
  })
})

describe('a revoked token learns nothing of the route', () => {
  // The revocation read answers after the handler's own D1 read (slowKv): a 401 that kept the
  // handler's figures or headers would show how far the handler got.
  const slowRevocationEnv = { ...env, LOG_REQUESTS: 'false', REVOKED_TOKENS: slowKv(env.REVOKED_TOKENS) }

  async function revokedToken(): Promise<string> {
    const { tokens } = await registerAndLogin()
    expect((await api('POST', '/auth/logout', undefined, tokens.access_token)).status).toBe(204)
    return tokens.access_token
  }

  it.each(['/api/v1/users/me', '/api/v1/auth/sessions'])(
    'GET %s: Server-Timing shows only the revocation read, and no header of the handler survives',
    async (path) => {
      const token = await revokedToken()
      const ctx = createExecutionContext()
      const res = await worker.fetch(new Request(`${BASE_URL}${path}`, bearer(token)), slowRevocationEnv, ctx)
      await waitOnExecutionContext(ctx)

      expect(res.status).toBe(401)
      expect(((await res.json()) as { code: string }).code).toBe('token_revoked')
      const timing = res.headers.get('server-timing') ?? ''
      expect(timing).toMatch(/d1;dur=0\.0;desc="calls=0 /)
      expect(timing).toContain('kv;')
      expect(timing).toMatch(/kv;dur=[^;]+;desc="calls=1"/)
      expect(timing).toContain('rt;desc="1"')
      // The handlers answer `private, no-store`; the problem's own header is `no-store`.
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(res.headers.get('x-request-id')).toBeTruthy()
    },
  )
})

describe('wrangler.toml', () => {
  it('turns Workers Logs on: [observability] enabled = true', () => {
    const section = /^\[observability\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(wranglerToml)
    expect(section, '[observability] section').not.toBeNull()
    expect(section![1]).toMatch(/^enabled\s*=\s*true\s*$/m)
  })
})
