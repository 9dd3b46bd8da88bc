import { env } from 'cloudflare:workers'
import { Secret, TOTP } from 'otpauth'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  api,
  apiWithEnv,
  decodeJwt,
  expectProblem,
  login,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  uniqueName,
} from './helpers'
import type { RegisteredUser, TokenPair } from './helpers'
import { TEST_PROVIDERS, signIdToken } from './oidc-provider'

// Outages of D1 and KV in the middle of a request (src/lib/outages.ts): what a binding throws when
// the dependency is unreachable (not an SQL error) answers 503 `service_unavailable` with
// Retry-After; nothing is half-written, and the same request retried completes the change.
// test/faults.test.ts covers whole-binding outages and SQL errors; this file makes one step of a
// multi-step write fail, as a lost connection would, and retries.

type WorkerEnv = typeof env

/** What the bindings throw when the network to them is gone. */
const d1Outage = () => new Error('D1_ERROR: Network connection lost.')
const kvOutage = () => new Error('KV PUT failed: Network connection lost.')

interface Faults {
  /** The next D1 batch, or statement run alone, with a statement whose SQL matches fails `times` times. */
  d1?: { matches: (sql: string) => boolean; times: number }
  /** Every KV put and delete fails. */
  kvWrites?: boolean
  /** KV writes start failing once a D1 batch with a statement whose SQL matches has committed. */
  kvWritesAfter?: (sql: string) => boolean
}

let faults: Faults = {}

afterEach(() => {
  faults = {}
  vi.useRealTimers()
})

function d1Fails(sqls: string[]): boolean {
  const fault = faults.d1
  if (fault === undefined || fault.times === 0 || !sqls.some(fault.matches)) return false
  fault.times -= 1
  return true
}

/** The worker's D1 (and the sessions it opens) with the faults above. */
function flakyD1(real: D1Database): D1Database {
  const sqlOf = new WeakMap<object, string>()
  const originals = new WeakMap<object, D1PreparedStatement>()
  const wrapStatement = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrapStatement(target.bind(...args), sql)
        if (typeof property === 'string' && ['run', 'all', 'first', 'raw'].includes(property)) {
          return (...args: unknown[]) =>
            d1Fails([sql])
              ? Promise.reject(d1Outage())
              : (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
        }
        return (value as (...a: unknown[]) => unknown).bind(target)
      },
    })
    sqlOf.set(proxy, sql)
    originals.set(proxy, statement)
    return proxy
  }
  const wrapSession = (session: D1Database | D1DatabaseSession): D1Database =>
    new Proxy(session, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (property === 'prepare') return (sql: string) => wrapStatement(target.prepare(sql), sql)
        if (property === 'batch') {
          return async (statements: D1PreparedStatement[]) => {
            const sqls = statements.map((statement) => sqlOf.get(statement) ?? '')
            if (d1Fails(sqls)) throw d1Outage()
            const results = await target.batch(statements.map((statement) => originals.get(statement) ?? statement))
            if (faults.kvWritesAfter !== undefined && sqls.some(faults.kvWritesAfter)) faults.kvWrites = true
            return results
          }
        }
        if (property === 'withSession')
          return (constraint?: string) => wrapSession((target as D1Database).withSession(constraint))
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    }) as D1Database
  return wrapSession(real)
}

function flakyKv(real: KVNamespace): KVNamespace {
  return new Proxy(real, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if ((property === 'put' || property === 'delete') && faults.kvWrites === true) {
        return () => Promise.reject(kvOutage())
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

// Built once: config and keys are memoised per env object. Without faults it is the normal worker.
const flaky: WorkerEnv = { ...env, DB: flakyD1(env.DB), REVOKED_TOKENS: flakyKv(env.REVOKED_TOKENS) }

const call = (method: string, path: string, body?: unknown, token?: string) =>
  apiWithEnv(flaky, method, path, body, token)

const updatesSessions = (sql: string) => /^update "sessions"/i.test(sql)

/** 503 service_unavailable with Retry-After, naming the dependency and nothing of the cause. */
async function expectOutage(res: Response, dependency: 'D1' | 'KV'): Promise<void> {
  const text = await res.clone().text()
  const problem = await expectProblem(res, 503, 'service_unavailable')
  expect(res.headers.get('retry-after')).toMatch(/^[1-9]\d*$/)
  expect(problem.detail).toContain(dependency)
  expect(text).not.toMatch(/network connection lost|select |insert |update |delete from|D1_ERROR/i)
}

const sidOf = (pair: TokenPair): string => decodeJwt(pair.access_token).payload.sid as string

async function revokedAt(pair: TokenPair): Promise<number | null> {
  const row = await env.DB.prepare('SELECT revoked_at FROM sessions WHERE sid = ?')
    .bind(sidOf(pair))
    .first<{ revoked_at: number | null }>()
  return row!.revoked_at
}

async function count(sql: string, ...params: unknown[]): Promise<number> {
  const row = await env.DB.prepare(sql)
    .bind(...params)
    .first<{ n: number }>()
  return row!.n
}

async function expectSessionEnded(pair: TokenPair): Promise<void> {
  await expectProblem(await api('GET', '/users/me', undefined, pair.access_token), 401, 'token_revoked')
  await expectProblem(
    await api('POST', '/auth/token/refresh', { refresh_token: pair.refresh_token }),
    401,
    'token_revoked',
  )
}

async function twoSessions(): Promise<{ user: RegisteredUser; mine: TokenPair; other: TokenPair }> {
  const { user, tokens: mine } = await registerAndLogin()
  return { user, mine, other: await login(user) }
}

describe('logout-all with an outage half-way', () => {
  it('D1 fails at the revocation: 503, no session row revoked; the retry ends every session', async () => {
    const { user, mine, other } = await twoSessions()
    faults = { d1: { matches: updatesSessions, times: 1 } }
    await expectOutage(await call('POST', '/auth/logout-all', undefined, mine.access_token), 'D1')
    expect(await revokedAt(mine)).toBeNull()
    expect(await revokedAt(other)).toBeNull()
    const ended = await env.DB.prepare('SELECT all_sessions_ended_at FROM users WHERE id = ?')
      .bind(user.id)
      .first<{ all_sessions_ended_at: number | null }>()
    expect(ended!.all_sessions_ended_at).toBeNull()

    expect((await call('POST', '/auth/logout-all', undefined, mine.access_token)).status).toBe(204)
    await expectSessionEnded(other)
    await expectSessionEnded(mine)
  })

  it('KV fails after the rows are revoked: 503; the retry with the same token completes it', async () => {
    const { mine, other } = await twoSessions()
    faults = { kvWritesAfter: updatesSessions }
    await expectOutage(await call('POST', '/auth/logout-all', undefined, mine.access_token), 'KV')
    // Refresh has stopped everywhere; the caller's key, written last, is what is missing.
    expect(await revokedAt(mine)).not.toBeNull()
    expect(await revokedAt(other)).not.toBeNull()
    expect((await api('GET', '/users/me', undefined, mine.access_token)).status).toBe(200)

    faults = {}
    expect((await call('POST', '/auth/logout-all', undefined, mine.access_token)).status).toBe(204)
    await expectSessionEnded(other)
    await expectSessionEnded(mine)
  })

  it('KV fails before anything is written: 503, nothing revoked in D1; the retry completes it', async () => {
    const { mine, other } = await twoSessions()
    faults = { kvWrites: true }
    await expectOutage(await call('POST', '/auth/logout-all', undefined, mine.access_token), 'KV')
    expect(await revokedAt(mine)).toBeNull()
    expect(await revokedAt(other)).toBeNull()

    faults = {}
    expect((await call('POST', '/auth/logout-all', undefined, mine.access_token)).status).toBe(204)
    await expectSessionEnded(other)
    await expectSessionEnded(mine)
  })
})

describe('a password change with an outage half-way', () => {
  const newPassword = 'the password after the change'

  it('D1 fails at the commit: 503, the old password still works and no session is revoked; the retry completes it', async () => {
    const { user, mine, other } = await twoSessions()
    const body = { old_password: user.password, new_password: newPassword }
    faults = { d1: { matches: updatesSessions, times: 1 } }
    await expectOutage(await call('POST', '/auth/password/change', body, mine.access_token), 'D1')
    expect(await revokedAt(mine)).toBeNull()
    expect(await revokedAt(other)).toBeNull()
    await expectProblem(
      await api('POST', '/auth/token', { username: user.username, password: newPassword }),
      401,
      'invalid_credentials',
    )
    expect((await api('POST', '/auth/token', { username: user.username, password: user.password })).status).toBe(200)

    const retried = await call('POST', '/auth/password/change', body, mine.access_token)
    expect(retried.status).toBe(200)
    await expectSessionEnded(other)
    const fresh = (await retried.json()) as TokenPair
    expect((await api('GET', '/users/me', undefined, fresh.access_token)).status).toBe(200)
    expect((await login({ username: user.username, password: newPassword })).access_token).toBeTruthy()
    await expectProblem(
      await api('POST', '/auth/token', { username: user.username, password: user.password }),
      401,
      'invalid_credentials',
    )
  })

  it('KV fails after the commit: the change stands and answers 200 (never 5xx for a committed change)', async () => {
    const { user, mine, other } = await twoSessions()
    faults = { kvWritesAfter: updatesSessions }
    const res = await call(
      'POST',
      '/auth/password/change',
      { old_password: user.password, new_password: newPassword },
      mine.access_token,
    )
    expect(res.status).toBe(200)
    faults = {}
    // The other session's key was written before the commit: it has ended, access and refresh.
    await expectSessionEnded(other)
    expect((await login({ username: user.username, password: newPassword })).access_token).toBeTruthy()
    const fresh = (await res.json()) as TokenPair
    expect((await api('GET', '/users/me', undefined, fresh.access_token)).status).toBe(200)
  })
})

describe('single-batch writes under a D1 outage: 503, nothing written, the retry succeeds', () => {
  it('POST /auth/register', async () => {
    const username = uniqueName('outage')
    const input = { username, email: `${username}@example.com`, password: 'correct horse battery staple' }
    faults = { d1: { matches: (sql) => /^insert into "users"/i.test(sql), times: 1 } }
    await expectOutage(await call('POST', '/auth/register', input), 'D1')
    expect(await count('SELECT count(*) AS n FROM users WHERE username = ?', username)).toBe(0)
    expect(await count('SELECT count(*) AS n FROM one_time_tokens WHERE email = ?', input.email)).toBe(0)
    expect(await outboxMessagesTo(input.email)).toHaveLength(0)
    expect((await call('POST', '/auth/register', input)).status).toBe(201)
    expect(await outboxMessagesTo(input.email)).toHaveLength(1)
  })

  it('POST /subscribers', async () => {
    const email = `${uniqueName('outage')}@example.com`
    faults = { d1: { matches: (sql) => /^insert into "subscribers"/i.test(sql), times: 1 } }
    await expectOutage(await call('POST', '/subscribers', { email, name: 'Ada' }), 'D1')
    expect(await count('SELECT count(*) AS n FROM subscribers WHERE email = ?', email)).toBe(0)
    expect(await count('SELECT count(*) AS n FROM one_time_tokens WHERE email = ?', email)).toBe(0)
    expect(await outboxMessagesTo(email)).toHaveLength(0)
    expect((await call('POST', '/subscribers', { email, name: 'Ada' })).status).toBe(202)
    expect(await outboxMessagesTo(email)).toHaveLength(1)
  })

  it('POST /auth/password/reset', async () => {
    const user = await registerUser()
    const resets = () =>
      count("SELECT count(*) AS n FROM one_time_tokens WHERE user_id = ? AND purpose = 'password_reset'", user.id)
    faults = { d1: { matches: (sql) => /^insert into "one_time_tokens"/i.test(sql), times: 1 } }
    await expectOutage(await call('POST', '/auth/password/reset', { email: user.email }), 'D1')
    expect(await resets()).toBe(0)
    expect((await call('POST', '/auth/password/reset', { email: user.email })).status).toBe(202)
    expect(await resets()).toBe(1)
  })
})

// ---------------------------------------------------------------------------------------------
// Multi-step writes that spend something (a TOTP step, a recovery code, an ID token, a session
// row) before the step that fails: the 503 promises that a retry works. What is spent lands in
// the batch of what it allows (src/db/guards.ts, src/db/spent-id-tokens.ts), so a failed batch
// leaves it usable.

const STEP_MS = 30_000

function stopClockMidStep(): void {
  vi.useFakeTimers({ toFake: ['Date'] })
  vi.setSystemTime(Math.floor(Date.now() / STEP_MS) * STEP_MS + STEP_MS / 2)
}

function codeOf(secret: string, offsetSteps = 0): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({
    timestamp: Date.now() + offsetSteps * STEP_MS,
  })
}

async function startEnrolment(accessToken: string): Promise<string> {
  const started = await api('POST', '/auth/mfa/totp', undefined, accessToken)
  expect(started.status).toBe(200)
  return ((await started.json()) as { secret: string }).secret
}

describe('second-factor and provider writes with an outage half-way', () => {
  // The first code is accepted on its own (its step is spent), but the factor is turned on only by
  // the batch that also stores the recovery codes and ends the other sessions: when that batch
  // fails the enrolment stays pending, and the next code confirms it.
  it('TOTP confirm: D1 fails at the commit (503); the retry with the next code turns the factor on', async () => {
    stopClockMidStep()
    const { mine } = await twoSessions()
    const secret = await startEnrolment(mine.access_token)
    faults = { d1: { matches: (sql) => /^update "users" set "mfa_enabled"/i.test(sql), times: 1 } }
    await expectOutage(await call('POST', '/auth/mfa/totp/confirm', { code: codeOf(secret) }, mine.access_token), 'D1')
    vi.setSystemTime(Date.now() + STEP_MS)
    const retried = await call('POST', '/auth/mfa/totp/confirm', { code: codeOf(secret) }, mine.access_token)
    expect(retried.status, await retried.clone().text()).toBe(200)
    const me = await api('GET', '/users/me', undefined, mine.access_token)
    expect(((await me.json()) as { mfa_enabled: boolean }).mfa_enabled).toBe(true)
  })

  it('recovery-code sign-in: D1 fails when the session starts (503); the retry with the same code signs in', async () => {
    stopClockMidStep()
    const { user, tokens } = await registerAndLogin()
    const secret = await startEnrolment(tokens.access_token)
    const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: codeOf(secret) }, tokens.access_token)
    const { recovery_codes: codes } = (await confirmed.json()) as { recovery_codes: string[] }
    const first = await api('POST', '/auth/token', { username: user.username, password: user.password })
    const { mfa_token: mfaToken } = (await expectProblem(first, 401, 'mfa_required')) as unknown as {
      mfa_token: string
    }
    faults = { d1: { matches: (sql) => /^insert into "sessions"/i.test(sql), times: 1 } }
    await expectOutage(await call('POST', '/auth/mfa/verify', { mfa_token: mfaToken, recovery_code: codes[0]! }), 'D1')
    const retried = await call('POST', '/auth/mfa/verify', { mfa_token: mfaToken, recovery_code: codes[0]! })
    expect(retried.status, await retried.clone().text()).toBe(200)
  })

  it('provider link: D1 fails at the link INSERT (503); the retry with the same ID token links', async () => {
    const { user, tokens } = await registerAndLogin()
    const nonce = crypto.randomUUID()
    const sub = String(100_000_000 + Math.floor(Math.random() * 1e9))
    const idToken = await signIdToken({
      kid: 'google-1',
      iss: 'https://accounts.google.com',
      aud: TEST_PROVIDERS.google.audiences[0],
      sub,
      email: `${uniqueName('link')}@gmail.com`,
      email_verified: true,
      nonce,
    })
    faults = { d1: { matches: (sql) => /^insert into "external_identities"/i.test(sql), times: 1 } }
    const body = { id_token: idToken, nonce }
    await expectOutage(await call('POST', '/auth/oidc/google/link', body, tokens.access_token), 'D1')
    expect(await count('SELECT count(*) AS n FROM external_identities WHERE user_id = ?', user.id)).toBe(0)
    const retried = await call('POST', '/auth/oidc/google/link', body, tokens.access_token)
    expect(retried.status, await retried.clone().text()).toBe(204)
  })

  // DELETE /auth/sessions/{id} writes the session's row and its KV key at once. When the KV write
  // fails the row is revoked all the same; the retry finds the recently revoked row without its
  // key and finishes the job (src/sessions/devices.ts signOutDevice).
  it('DELETE /auth/sessions/{id}: KV fails (503); the retry ends the device, whose access token stops', async () => {
    const { mine, other } = await twoSessions()
    faults = { kvWrites: true }
    await expectOutage(await call('DELETE', `/auth/sessions/${sidOf(other)}`, undefined, mine.access_token), 'KV')
    faults = {}
    const retried = await call('DELETE', `/auth/sessions/${sidOf(other)}`, undefined, mine.access_token)
    expect(retried.status, await retried.clone().text()).toBe(204)
    await expectProblem(await api('GET', '/users/me', undefined, other.access_token), 401, 'token_revoked')
  })
})
