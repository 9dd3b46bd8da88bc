import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  api,
  expectProblem,
  fetchWorker,
  login,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  uniqueName,
} from './helpers'
import type { RegisteredUser } from './helpers'

// Mail that must not go out, over HTTP:
// - the console transport (the default) prints every link, tokens included, so it is refused unless
//   both PUBLIC_BASE_URL and the request's host are local. A deployment left on the default
//   PUBLIC_BASE_URL (http://localhost:8787) still answers its real hostname: there, every request
//   that would send mail answers 500 naming MAIL_TRANSPORT, writes nothing, and answers an address
//   without an account exactly as one with an account (no enumeration);
// - the per-recipient limit (3 emails of a kind per address per hour) holds under a burst.

/** A deployed worker's hostname (not loopback, not under a reserved test domain). */
const DEPLOYED = 'https://edgepress.example.workers.dev'

function at(origin: string, method: string, path: string, body?: unknown, token?: string): Promise<Response> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  return fetchWorker(`${origin}/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  })
}

async function count(sql: string, ...params: unknown[]): Promise<number> {
  const row = await env.DB.prepare(sql)
    .bind(...params)
    .first<{ n: number }>()
  return row!.n
}

const tokensTo = (email: string) =>
  count('SELECT count(*) AS n FROM one_time_tokens WHERE lower(email) = lower(?)', email)
const subscribersWith = (email: string) =>
  count('SELECT count(*) AS n FROM subscribers WHERE lower(email) = lower(?)', email)

/** The problem a refused request answers, without what differs from request to request. */
async function refusal(res: Response): Promise<Record<string, unknown>> {
  const problem = await expectProblem(res, 500, 'internal_error')
  expect(problem.detail).toContain('MAIL_TRANSPORT')
  expect(res.headers.get('retry-after')).toBeNull()
  const { request_id: _requestId, ...rest } = problem as unknown as Record<string, unknown>
  return rest
}

/**
 * A request to the deployed host that must be refused: the refusal, once it is checked that
 * nothing was printed as an email meanwhile (the console transport's output).
 */
async function refusedAtDeployed(method: string, path: string, body?: unknown, token?: string) {
  const log = vi.spyOn(console, 'log')
  try {
    const res = await at(DEPLOYED, method, path, body, token)
    expect(log.mock.calls.flat().map(String).join('\n')).not.toContain('--- email ---')
    return await refusal(res)
  } finally {
    log.mockRestore()
  }
}

describe('the console transport is refused for a request to a non-local host', () => {
  it('POST /auth/password/reset: 500 naming MAIL_TRANSPORT, the same for an address with and without an account, no token', async () => {
    const user = await registerUser()
    const ghost = `${uniqueName('ghost')}@example.com`
    const before = { tokens: await tokensTo(user.email), mails: (await outboxMessagesTo(user.email)).length }

    const known = await refusedAtDeployed('POST', '/auth/password/reset', { email: user.email })
    const unknown = await refusedAtDeployed('POST', '/auth/password/reset', { email: ghost })
    expect(unknown).toEqual(known)

    expect(await tokensTo(user.email)).toBe(before.tokens)
    expect(await outboxMessagesTo(user.email)).toHaveLength(before.mails)
    expect(await tokensTo(ghost)).toBe(0)
    expect(await outboxMessagesTo(ghost)).toHaveLength(0)

    // The same worker on a local host sends the reset link: the refusal is about the host.
    expect((await api('POST', '/auth/password/reset', { email: user.email })).status).toBe(202)
    expect(await tokensTo(user.email)).toBe(before.tokens + 1)
  })

  it('POST /auth/register: 500 for a new address and for a taken one alike; no account, token or email', async () => {
    const taken = await registerUser()
    const username = uniqueName('deployed')
    const email = `${username}@example.com`
    const input = { username, email, password: 'correct horse battery staple' }
    const before = { tokens: await tokensTo(taken.email), mails: (await outboxMessagesTo(taken.email)).length }

    const fresh = await refusedAtDeployed('POST', '/auth/register', input)
    const duplicate = await refusedAtDeployed('POST', '/auth/register', {
      ...input,
      username: uniqueName('dup'),
      email: taken.email,
    })
    expect(duplicate).toEqual(fresh)

    expect(await count('SELECT count(*) AS n FROM users WHERE username = ?', username)).toBe(0)
    expect(await count('SELECT count(*) AS n FROM users WHERE lower(email) = lower(?)', taken.email)).toBe(1)
    expect(await tokensTo(email)).toBe(0)
    expect(await outboxMessagesTo(email)).toHaveLength(0)
    expect(await tokensTo(taken.email)).toBe(before.tokens)
    expect(await outboxMessagesTo(taken.email)).toHaveLength(before.mails)

    expect((await api('POST', '/auth/register', input)).status).toBe(201)
  })

  it('POST /subscribers: 500 for a new, a pending and an active address alike; nothing written', async () => {
    const fresh = `${uniqueName('fresh')}@example.com`
    const pending = `${uniqueName('pending')}@example.com`
    const active = `${uniqueName('active')}@example.com`
    for (const email of [pending, active]) expect((await api('POST', '/subscribers', { email })).status).toBe(202)
    await env.DB.prepare("UPDATE subscribers SET status = 'active' WHERE email = ?").bind(active).run()

    const answers = [
      await refusedAtDeployed('POST', '/subscribers', { email: fresh, name: 'Fresh' }),
      await refusedAtDeployed('POST', '/subscribers', { email: pending, name: 'Renamed' }),
      await refusedAtDeployed('POST', '/subscribers', { email: active }),
    ]
    expect(answers[1]).toEqual(answers[0])
    expect(answers[2]).toEqual(answers[0])

    expect(await subscribersWith(fresh)).toBe(0)
    expect(await tokensTo(fresh)).toBe(0)
    expect(await outboxMessagesTo(fresh)).toHaveLength(0)
    for (const email of [pending, active]) {
      expect(await tokensTo(email)).toBe(1)
      expect(await outboxMessagesTo(email)).toHaveLength(1)
    }
    const row = await env.DB.prepare('SELECT name FROM subscribers WHERE email = ?')
      .bind(pending)
      .first<{ name: string | null }>()
    expect(row!.name).toBeNull()
  })

  it('POST /auth/email/resend (signed in): 500, no new token', async () => {
    const { user, tokens } = await registerAndLogin()
    const before = await tokensTo(user.email)
    await refusedAtDeployed('POST', '/auth/email/resend', undefined, tokens.access_token)
    expect(await tokensTo(user.email)).toBe(before)
  })

  it('requests that send no mail are served on that host as usual', async () => {
    const user = await registerUser()
    const res = await at(DEPLOYED, 'POST', '/auth/token', { username: user.username, password: user.password })
    expect(res.status).toBe(200)
  })

  it.for([
    ['a deployed hostname', DEPLOYED, false],
    ['localhost in a subdomain of a real domain', 'https://localhost.attacker.example.com', false],
    ['a reserved test name in a subdomain of a real domain', 'https://edgepress.test.evil.com', false],
    ['a loopback address in a wildcard-DNS name', 'https://127.0.0.1.nip.io', false],
    ['the default PUBLIC_BASE_URL host', 'http://localhost:8787', true],
    ['an IPv4 loopback', 'http://127.0.0.1:8787', true],
    ['the IPv6 loopback', 'http://[::1]:8787', true],
    ['a name under .test', 'https://edgepress.test', true],
  ] as const)('decides by the request host: %s', async ([, origin, allowed]) => {
    const res = await at(origin, 'POST', '/auth/password/reset', { email: `${uniqueName('host')}@example.com` })
    if (allowed) expect(res.status).toBe(202)
    else await refusal(res)
  })
})

describe('the per-recipient mail limit holds under a burst', () => {
  const verificationMails = async (user: RegisteredUser) =>
    (await outboxMessagesTo(user.email)).filter((message) => /Confirm your email address/.test(message.subject))

  afterEach(() => {
    vi.useRealTimers()
  })

  it('8 concurrent POST /auth/email/resend for one user: all 202, at most 3 verification emails in the hour', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.now())
    const { user, tokens } = await registerAndLogin()
    // Registering sent the first.
    expect(await verificationMails(user)).toHaveLength(1)

    const answers = await Promise.all(
      Array.from({ length: 8 }, () => api('POST', '/auth/email/resend', undefined, tokens.access_token)),
    )
    expect(answers.map((res) => res.status)).toEqual(Array(8).fill(202))
    expect(await verificationMails(user)).toHaveLength(3)
    expect(
      await count(
        "SELECT count(*) AS n FROM one_time_tokens WHERE user_id = ? AND purpose = 'email_verification'",
        user.id,
      ),
    ).toBe(3)

    // Another burst later in the hour sends nothing; once the hour is over, the limit starts anew.
    vi.setSystemTime(Date.now() + 59 * 60_000)
    const later = await login(user)
    await Promise.all(Array.from({ length: 4 }, () => api('POST', '/auth/email/resend', undefined, later.access_token)))
    expect(await verificationMails(user)).toHaveLength(3)
    vi.setSystemTime(Date.now() + 2 * 60_000)
    const afterTheHour = await login(user)
    await Promise.all(
      Array.from({ length: 8 }, () => api('POST', '/auth/email/resend', undefined, afterTheHour.access_token)),
    )
    expect(await verificationMails(user)).toHaveLength(6)
  })
})
