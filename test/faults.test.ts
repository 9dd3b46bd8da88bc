import { env } from 'cloudflare:workers'
import { describe, it } from 'vitest'
import { deliverDueEmails } from '../src/email/outbox'
import type { MailTransport } from '../src/email/transports'
import { createDb } from '../src/db/client'
import {
  api,
  apiWithEnv,
  expectProblem,
  login,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  tokenFromEmail,
  uniqueName,
} from './helpers'
import type { RegisteredUser, TokenPair } from './helpers'

// Fault injection: the worker is called directly with D1 or KV bindings that
// fail. Config and keys are memoised per env object (src/config.ts, src/middleware/token-keys.ts), so each faulty
// env is built once, at module level.

type WorkerEnv = typeof env

const injected = (what: string) => new Error(`D1_ERROR: injected failure: ${what}`)

// ---------------------------------------------------------------------------------------------
// Faulty bindings

/** A KV namespace whose listed operations throw; the others reach the real namespace. */
function failingKv(real: KVNamespace, failing: ReadonlySet<string>): KVNamespace {
  return new Proxy(real, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (typeof property === 'string' && failing.has(property)) {
        return () => Promise.reject(new Error(`KV ${property} failed: injected (network connection lost)`))
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

interface D1Faults {
  /** Every statement run (run/all/first/raw) and every batch throws. */
  failAll?: boolean
  /**
   * Called with the SQL of each statement of a batch; a statement for which it returns true is
   * replaced, inside the real batch, by one that fails when D1 executes it (a NOT NULL violation),
   * so D1 runs the statements before it and must roll them back.
   */
  sabotage?: (sql: string, index: number) => boolean
  /** A statement run on its own (run/all/first/raw) whose SQL matches throws. */
  failStatement?: (sql: string) => boolean
}

/**
 * A D1 binding (and the sessions withContext() opens on it) with injected faults. The error
 * messages quote the SQL, so a response that leaked the cause would be caught.
 */
function faultyD1(real: D1Database, faults: D1Faults): D1Database {
  const sqlOf = new WeakMap<object, string>()
  const originals = new WeakMap<object, D1PreparedStatement>()
  const wrapStatement = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrapStatement(target.bind(...args), sql)
        const failing = faults.failAll === true || faults.failStatement?.(sql) === true
        if (failing && typeof property === 'string' && ['run', 'all', 'first', 'raw'].includes(property)) {
          return () => Promise.reject(injected(sql))
        }
        return (value as (...a: unknown[]) => unknown).bind(target)
      },
    })
    sqlOf.set(proxy, sql)
    originals.set(proxy, statement)
    return proxy
  }
  const wrapSession = (session: D1Database | D1DatabaseSession): D1Database => {
    const batch = async (statements: D1PreparedStatement[]) => {
      if (faults.failAll === true) throw injected('batch')
      const sabotaged = statements.map((statement, index) => {
        const sql = sqlOf.get(statement) ?? ''
        if (faults.sabotage?.(sql, index) === true) {
          return session.prepare(
            'INSERT INTO email_outbox (recipient, subject, text, next_attempt_at, created_at) VALUES (NULL, NULL, NULL, 0, 0)',
          )
        }
        return originals.get(statement) ?? statement
      })
      return session.batch(sabotaged)
    }
    return new Proxy(session, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (property === 'prepare') return (sql: string) => wrapStatement(target.prepare(sql), sql)
        if (property === 'batch') return batch
        if (property === 'exec')
          return (sql: string) =>
            faults.failAll === true ? Promise.reject(injected(sql)) : (target as D1Database).exec(sql)
        if (property === 'withSession')
          return (constraint?: string) => wrapSession((target as D1Database).withSession(constraint))
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    }) as D1Database
  }
  return wrapSession(real)
}

// Built once each: config is memoised per env object.
const kvGetFails: WorkerEnv = {
  ...env,
  REVOKED_TOKENS: failingKv(env.REVOKED_TOKENS, new Set(['get', 'getWithMetadata'])),
}
const kvWritesFail: WorkerEnv = { ...env, REVOKED_TOKENS: failingKv(env.REVOKED_TOKENS, new Set(['put', 'delete'])) }
const d1Fails: WorkerEnv = { ...env, DB: faultyD1(env.DB, { failAll: true }) }
/** The second statement of every batch fails when D1 executes it. */
const secondStatementFails: WorkerEnv = { ...env, DB: faultyD1(env.DB, { sabotage: (_sql, index) => index === 1 }) }
/** Any batch statement inserting into the outbox fails when D1 executes it. */
const outboxInsertFails: WorkerEnv = {
  ...env,
  DB: faultyD1(env.DB, { sabotage: (sql) => /^insert into "email_outbox"/i.test(sql) }),
}

const call = apiWithEnv

/** A 5xx problem that says nothing about SQL, stacks, the injected cause or secrets. */
async function expectOpaqueServerProblem(res: Response): Promise<Record<string, unknown>> {
  const text = await res.clone().text()
  if (res.status !== 500 && res.status !== 503) throw new Error(`expected 500 or 503, got ${res.status}: ${text}`)
  const problem = await expectProblem(res, res.status, res.status === 503 ? 'service_unavailable' : 'internal_error')
  for (const leak of [
    /select|insert|update|delete from/i,
    /D1_ERROR|injected|SQLITE/i,
    /\bat .*:\d+:\d+/,
    /stack/i,
    env.JWT_SECRET,
  ]) {
    if (typeof leak === 'string' ? text.includes(leak) : leak.test(text))
      throw new Error(`5xx body leaks ${leak}: ${text}`)
  }
  return problem
}

async function countRows(sql: string, ...params: unknown[]): Promise<number> {
  const row = await env.DB.prepare(sql)
    .bind(...params)
    .first<{ n: number }>()
  return row!.n
}

// ---------------------------------------------------------------------------------------------

describe('KV unavailable: revocation cannot be checked, so tokens are refused (fail closed)', () => {
  it('answers 503 service_unavailable with Retry-After to a valid access token, never 200', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    expect((await api('GET', '/users/me', undefined, tokens.access_token)).status).toBe(200)

    const res = await call(kvGetFails, 'GET', '/users/me', undefined, tokens.access_token)
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/)
    await expectProblem(res, 503, 'service_unavailable')
  })

  it('refuses authenticated writes the same way, and writes nothing', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await call(kvGetFails, 'POST', '/posts', { title: 'never', body: 'stored' }, tokens.access_token)
    expect(res.status).toBe(503)
    await expectProblem(res, 503, 'service_unavailable')
    expect(await countRows('SELECT count(*) AS n FROM posts WHERE author_id = ?', user.id)).toBe(0)
  })

  it('POST /auth/token/verify answers 503 rather than vouching for the token', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    for (const token of [tokens.access_token, tokens.refresh_token]) {
      const res = await call(kvGetFails, 'POST', '/auth/token/verify', { token })
      expect(res.status).toBe(503)
      expect(res.headers.get('retry-after')).toMatch(/^\d+$/)
      await expectProblem(res, 503, 'service_unavailable')
    }
  })

  it('GET /api/v1/health answers 503 naming KV', async ({ expect }) => {
    const res = await call(kvGetFails, 'GET', '/health')
    const problem = await expectProblem(res, 503, 'service_unavailable')
    expect(problem.detail).toContain('KV')
    expect(problem.detail).not.toContain('D1')
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/)
  })
})

describe('D1 unavailable', () => {
  it('GET /api/v1/health answers 503 naming D1', async ({ expect }) => {
    const res = await call(d1Fails, 'GET', '/health')
    const problem = await expectOpaqueServerProblem(res)
    expect(res.status).toBe(503)
    expect(problem.detail).toContain('D1')
    expect(problem.detail).not.toContain('KV')
  })

  it('every kind of route answers 503 service_unavailable with Retry-After: no SQL, stack, cause or secret', async ({
    expect,
  }) => {
    const { user, tokens } = await registerAndLogin()
    const name = uniqueName('d1down')
    const requests: [string, string, unknown?, string?][] = [
      ['GET', '/posts'],
      ['GET', `/users/${user.id}`],
      ['GET', `/users/${user.id}/posts`],
      ['GET', '/users/me', undefined, tokens.access_token],
      ['POST', '/posts', { title: 't', body: 'b' }, tokens.access_token],
      [
        'POST',
        '/auth/register',
        { username: name, email: `${name}@example.com`, password: 'correct horse battery staple' },
      ],
      ['POST', '/auth/token', { username: user.username, password: user.password }],
      ['POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token }],
      ['POST', '/auth/password/reset', { email: user.email }],
      ['POST', '/subscribers', { email: `${name}@example.org` }],
    ]
    for (const [method, path, body, token] of requests) {
      const res = await call(d1Fails, method, path, body, token)
      expect(res.status, `${method} ${path}`).toBe(503)
      expect(res.headers.get('retry-after'), `${method} ${path}`).toMatch(/^\d+$/)
      const problem = await expectOpaqueServerProblem(res)
      expect(problem.detail, `${method} ${path}`).toContain('D1')
    }
    // Nothing was written by the refused requests.
    expect(await countRows('SELECT count(*) AS n FROM users WHERE username = ?', name)).toBe(0)
    expect(await countRows('SELECT count(*) AS n FROM posts WHERE author_id = ?', user.id)).toBe(0)
  })
})

describe('a bug is not an outage', () => {
  it('a statement D1 refuses (a NOT NULL violation) answers an opaque 500 internal_error, not 503', async ({
    expect,
  }) => {
    const name = uniqueName('bug')
    const res = await call(secondStatementFails, 'POST', '/auth/register', {
      username: name,
      email: `${name}@example.com`,
      password: 'correct horse battery staple',
    })
    expect(res.status).toBe(500)
    expect(res.headers.get('retry-after')).toBeNull()
    await expectOpaqueServerProblem(res)
  })

  it('a KV write outage (logout-all) answers 503 with Retry-After', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await call(kvWritesFail, 'POST', '/auth/logout-all', undefined, tokens.access_token)
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/)
    await expectOpaqueServerProblem(res)
  })
})

describe('a multi-step write is all-or-nothing', () => {
  async function expectNoTraceOfRegistration(username: string, email: string): Promise<void> {
    if ((await countRows('SELECT count(*) AS n FROM users WHERE lower(username) = lower(?)', username)) !== 0)
      throw new Error('user row left behind')
    if ((await countRows('SELECT count(*) AS n FROM one_time_tokens WHERE lower(email) = lower(?)', email)) !== 0)
      throw new Error('token row left behind')
    if ((await outboxMessagesTo(email)).length !== 0) throw new Error('outbox row left behind')
  }

  for (const [label, faultyEnv] of [
    ['the second statement of the batch', secondStatementFails],
    ['the outbox insert', outboxInsertFails],
  ] as const) {
    it(`POST /auth/register: when ${label} fails, no user, token or outbox row exists; a retry succeeds`, async ({
      expect,
    }) => {
      const username = uniqueName('atomic')
      const input = { username, email: `${username}@example.com`, password: 'correct horse battery staple' }

      const res = await call(faultyEnv, 'POST', '/auth/register', input)
      await expectOpaqueServerProblem(res)
      await expectNoTraceOfRegistration(username, input.email)

      const retry = await call(env, 'POST', '/auth/register', input)
      expect(retry.status).toBe(201)
      expect(await countRows('SELECT count(*) AS n FROM users WHERE username = ?', username)).toBe(1)
      expect(
        await countRows(
          "SELECT count(*) AS n FROM one_time_tokens WHERE email = ? AND purpose = 'email_verification'",
          input.email,
        ),
      ).toBe(1)
      expect(await outboxMessagesTo(input.email)).toHaveLength(1)
    })
  }

  it('POST /auth/password/reset/confirm: when the batch fails, the password is unchanged and the token unspent', async ({
    expect,
  }) => {
    const user = await registerUser()
    expect((await api('POST', '/auth/password/reset', { email: user.email })).status).toBe(202)
    const token = await tokenFromEmail(user.email, 'reset-password')
    const newPassword = 'a brand new passphrase'

    const res = await call(secondStatementFails, 'POST', '/auth/password/reset/confirm', {
      token,
      new_password: newPassword,
    })
    await expectOpaqueServerProblem(res)
    expect(
      await countRows(
        "SELECT count(*) AS n FROM one_time_tokens WHERE user_id = ? AND purpose = 'password_reset' AND used_at IS NULL",
        user.id,
      ),
    ).toBe(1)
    await login(user) // the old password still works

    const retry = await call(env, 'POST', '/auth/password/reset/confirm', { token, new_password: newPassword })
    expect(retry.status).toBe(204)
    await login({ username: user.username, password: newPassword })
    expect(
      await countRows(
        "SELECT count(*) AS n FROM one_time_tokens WHERE user_id = ? AND purpose = 'password_reset' AND used_at IS NULL",
        user.id,
      ),
    ).toBe(0)
  })
})

describe('logout while KV writes fail', () => {
  // What the code does (src/sessions/end.ts, endSessions with `only`): the D1 row and the KV key
  // at once; the row is marked revoked, so refresh stops at once, and the KV put throws; the
  // request answers 500 internal_error. The access token is NOT revoked yet (no KV key): the client
  // learns it from the 5xx and retries the logout, and the next refresh attempt finishes it too.
  it('answers 5xx (not 204), yet the session is revoked in D1 and its refresh token is refused', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await call(kvWritesFail, 'POST', '/auth/logout', {}, tokens.access_token)
    expect(res.status).not.toBe(204)
    await expectOpaqueServerProblem(res)

    expect(
      await countRows('SELECT count(*) AS n FROM sessions WHERE user_id = ? AND revoked_at IS NOT NULL', user.id),
    ).toBe(1)
    const refresh = await api('POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token })
    await expectProblem(refresh, 401, 'token_revoked')
    const verify = await api('POST', '/auth/token/verify', { token: tokens.refresh_token })
    expect(verify.status).toBe(401)

    // KV is back, and presenting the revoked session's refresh token finished the revocation
    // (src/sessions/rotate.ts completeRevocation): the access token stops too, and a retried
    // logout finds it revoked.
    await expectProblem(await api('GET', '/users/me', undefined, tokens.access_token), 401, 'token_revoked')
    await expectProblem(await api('POST', '/auth/logout', {}, tokens.access_token), 401, 'token_revoked')
  })

  it('a retried logout, once KV is back, completes it: 204, then the access token is refused', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    expect((await call(kvWritesFail, 'POST', '/auth/logout', {}, tokens.access_token)).status).not.toBe(204)
    expect((await api('POST', '/auth/logout', {}, tokens.access_token)).status).toBe(204)
    await expectProblem(await api('GET', '/users/me', undefined, tokens.access_token), 401, 'token_revoked')
  })
})

describe('ending every session survives a failure half-way, and retrying completes it', () => {
  /** The UPDATE that marks sessions revoked fails, on its own or inside a batch. */
  const sessionsUpdateFails: WorkerEnv = {
    ...env,
    DB: faultyD1(env.DB, {
      failStatement: (sql) => /^update "sessions"/i.test(sql),
      sabotage: (sql) => /^update "sessions"/i.test(sql),
    }),
  }

  async function twoSessions(): Promise<{ user: RegisteredUser; mine: TokenPair; attacker: TokenPair }> {
    const { user, tokens: mine } = await registerAndLogin()
    return { user, mine, attacker: await login(user) }
  }

  it('password reset: a failed session revocation commits nothing, so the same link can be retried', async ({
    expect,
  }) => {
    const { user, attacker } = await twoSessions()
    expect((await api('POST', '/auth/password/reset', { email: user.email })).status).toBe(202)
    const resetToken = await tokenFromEmail(user.email, 'reset-password')
    const body = { token: resetToken, new_password: 'the password after the reset' }

    await expectOpaqueServerProblem(await call(sessionsUpdateFails, 'POST', '/auth/password/reset/confirm', body))
    expect((await api('POST', '/auth/token', { username: user.username, password: user.password })).status).toBe(200)

    expect((await api('POST', '/auth/password/reset/confirm', body)).status).toBe(204)
    await expectProblem(
      await api('POST', '/auth/token/refresh', { refresh_token: attacker.refresh_token }),
      401,
      'token_revoked',
    )
    await expectProblem(await api('GET', '/users/me', undefined, attacker.access_token), 401, 'token_revoked')
  })

  it('logout-all: KV writes failing → 5xx; a retry revokes the access tokens of the sessions the first try revoked', async ({
    expect,
  }) => {
    const { mine, attacker } = await twoSessions()
    await expectOpaqueServerProblem(await call(kvWritesFail, 'POST', '/auth/logout-all', undefined, mine.access_token))

    expect((await api('POST', '/auth/logout-all', undefined, mine.access_token)).status).toBe(204)
    await expectProblem(await api('GET', '/users/me', undefined, attacker.access_token), 401, 'token_revoked')
    await expectProblem(
      await api('POST', '/auth/token/refresh', { refresh_token: attacker.refresh_token }),
      401,
      'token_revoked',
    )
    await expectProblem(await api('GET', '/users/me', undefined, mine.access_token), 401, 'token_revoked')
  })

  it('password change: KV writes failing → 5xx and nothing changed; the same request retried completes it', async ({
    expect,
  }) => {
    const { user, mine, attacker } = await twoSessions()
    const body = { old_password: user.password, new_password: 'the password after the change' }
    await expectOpaqueServerProblem(await call(kvWritesFail, 'POST', '/auth/password/change', body, mine.access_token))

    const retried = await api('POST', '/auth/password/change', body, mine.access_token)
    expect(retried.status).toBe(200)
    await expectProblem(await api('GET', '/users/me', undefined, attacker.access_token), 401, 'token_revoked')
    await expectProblem(
      await api('POST', '/auth/token/refresh', { refresh_token: attacker.refresh_token }),
      401,
      'token_revoked',
    )
    const fresh = (await retried.json()) as TokenPair
    expect((await api('GET', '/users/me', undefined, fresh.access_token)).status).toBe(200)
  })
})

describe('the outbox never loses a message when delivery fails', () => {
  const db = createDb({ DB: env.DB })
  // Far in the future, so request-time background drains (which use the real clock) never touch
  // the messages queued here; every drain below passes `now` explicitly.
  const T = new Date('2099-01-01T00:00:00Z')

  async function queue(recipient: string): Promise<number> {
    const row = await env.DB.prepare(
      "INSERT INTO email_outbox (recipient, subject, text, headers, status, attempts, next_attempt_at, created_at) VALUES (?, 'Hi', 'Body', '{}', 'pending', 0, ?, ?) RETURNING id",
    )
      .bind(recipient, T.getTime(), T.getTime())
      .first<{ id: number }>()
    return row!.id
  }
  const statusOf = (id: number) =>
    env.DB.prepare('SELECT status, attempts, last_error, next_attempt_at FROM email_outbox WHERE id = ?')
      .bind(id)
      .first<{ status: string; attempts: number; last_error: string | null; next_attempt_at: number }>()

  const sent: string[] = []
  const recording: MailTransport = {
    name: 'recording',
    sendBatch: async () => ({ outcome: 'accepted' }),
    async send(email) {
      sent.push(email.to)
    },
  }

  it('a throwing transport leaves the message pending with last_error, and it is delivered later', async ({
    expect,
  }) => {
    const recipient = `${uniqueName('outbox')}@example.com`
    const id = await queue(recipient)
    const throwing: MailTransport = {
      name: 'throwing',
      sendBatch: async () => ({ outcome: 'retry', retryAfterSeconds: undefined, error: 'SMTP 451' }),
      async send() {
        throw new Error('SMTP 451 temporary failure')
      },
    }
    await deliverDueEmails(db, throwing, 'test@example.com', T, 1000)
    const failed = await statusOf(id)
    expect(failed).toMatchObject({ status: 'pending', attempts: 1, last_error: 'SMTP 451 temporary failure' })
    expect(failed!.next_attempt_at).toBeGreaterThan(T.getTime())

    await deliverDueEmails(db, recording, 'test@example.com', new Date(failed!.next_attempt_at), 1000)
    expect(await statusOf(id)).toMatchObject({ status: 'sent', attempts: 2, last_error: null })
    expect(sent.filter((to) => to === recipient)).toHaveLength(1)
  })

  it('when D1 fails on the final update, the message stays claimable after its lease', async ({ expect }) => {
    const recipient = `${uniqueName('outbox')}@example.com`
    const id = await queue(recipient)
    // Fail only the UPDATE that settles this message (sets sent_at or last_error), not the claim.
    const failingSettle = new Proxy(env.DB, {
      get(target, property) {
        if (property === 'prepare') {
          return (sql: string) => {
            const statement = target.prepare(sql)
            const setClause = sql.split(' where ')[0]!
            if (!/^update "email_outbox" set .*"(sent_at|last_error)"/i.test(setClause)) return statement
            return new Proxy(statement, {
              get(inner, key) {
                if (key === 'bind') {
                  return (...args: unknown[]) =>
                    args.includes(id)
                      ? { run: () => Promise.reject(injected(sql)), all: () => Promise.reject(injected(sql)) }
                      : inner.bind(...args)
                }
                const value = Reflect.get(inner, key, inner) as unknown
                return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(inner) : value
              },
            })
          }
        }
        const value = Reflect.get(target, property, target) as unknown
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    })
    await expect(
      deliverDueEmails(createDb({ DB: failingSettle }), recording, 'test@example.com', T, 1000),
    ).rejects.toThrow(/Failed query: update "email_outbox"/)
    expect(sent.filter((to) => to === recipient)).toHaveLength(1)
    expect(await statusOf(id)).toMatchObject({ status: 'sending', attempts: 1 })

    // Within the lease nobody takes it again (no duplicate send)…
    await deliverDueEmails(db, recording, 'test@example.com', new Date(T.getTime() + 30_000), 1000)
    expect(sent.filter((to) => to === recipient)).toHaveLength(1)
    // …after it, the next drain re-claims and settles it.
    await deliverDueEmails(db, recording, 'test@example.com', new Date(T.getTime() + 61_000), 1000)
    expect(await statusOf(id)).toMatchObject({ status: 'sent', attempts: 2 })
    expect(sent.filter((to) => to === recipient)).toHaveLength(2)
  })
})
