import { env } from 'cloudflare:workers'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { api, login, makeAdmin, registerAndLogin, registerUser, tokenFromEmail, uniqueName } from './helpers'
import type { RegisteredUser, TokenPair } from './helpers'
import { TEST_PROVIDERS, signIdToken } from './oidc-provider'
import { SoftAuthenticator } from './webauthn-authenticator'

// The round-trip ledger (docs/design.md § Round trips): every route, on its success path and its
// common failure paths, stays within a budget of calls to the bindings that can be far away (D1
// and KV) and of depth, the number of sequential waves of them, read from the Server-Timing header
// the worker sends (`d1;desc="calls=<n> start=<s>"`, `kv;desc="calls=<n>"`, `rt;desc="<k>"`).
// A change that adds a sequential round trip fails here, naming the route.

interface Ledger {
  d1Calls: number
  d1Start: string
  kvCalls: number
  cacheCalls: number
  rateLimitCalls: number
  depth: number
}

function ledgerOf(res: Response): Ledger {
  const header = res.headers.get('server-timing') ?? ''
  const desc = (name: string): string =>
    new RegExp(`(?:^|,)\\s*${name}(?:;dur=[^;,]*)?;desc="([^"]*)"`).exec(header)?.[1] ?? ''
  const calls = (name: string): number => Number(/calls=(\d+)/.exec(desc(name))?.[1] ?? NaN)
  return {
    d1Calls: calls('d1'),
    d1Start: /start=(\w+)/.exec(desc('d1'))?.[1] ?? '',
    kvCalls: calls('kv'),
    cacheCalls: calls('cache'),
    rateLimitCalls: calls('ratelimit'),
    depth: Number(desc('rt')),
  }
}

interface Budget {
  kv: number | [number, number]
  d1: number | [number, number]
  start: string[]
  depth: number | [number, number]
}

const within = (value: number, bound: number | [number, number]): boolean =>
  typeof bound === 'number' ? value === bound : value >= bound[0] && value <= bound[1]

const upTo = (n: number): [number, number] => [0, n]

/** Asserts the budget and returns the response for further checks. */
async function expectBudget(label: string, res: Response, status: number, budget: Budget): Promise<Response> {
  const ledger = ledgerOf(res)
  const text = await res.clone().text()
  expect(res.status, `${label}: status (${text.slice(0, 200)})`).toBe(status)
  const summary = `${label}: ${JSON.stringify(ledger)}`
  expect(within(ledger.kvCalls, budget.kv), `${summary} — KV calls over budget ${JSON.stringify(budget.kv)}`).toBe(true)
  expect(within(ledger.d1Calls, budget.d1), `${summary} — D1 calls over budget ${JSON.stringify(budget.d1)}`).toBe(true)
  expect(budget.start, `${summary} — D1 session start`).toContain(ledger.d1Start)
  expect(within(ledger.depth, budget.depth), `${summary} — depth over budget ${JSON.stringify(budget.depth)}`).toBe(
    true,
  )
  expect(
    Number.isFinite(ledger.cacheCalls) && Number.isFinite(ledger.rateLimitCalls),
    `${summary} — cache and rate-limit calls reported`,
  ).toBe(true)
  return res
}

// The rows of the table in docs/design.md.
const ANONYMOUS_HIT: Budget = { kv: 0, d1: 0, start: ['none'], depth: 0 }
const ANONYMOUS_MISS: Budget = { kv: 0, d1: upTo(1), start: ['any', 'bookmark'], depth: upTo(1) }
const SIGNED_IN_READ: Budget = { kv: 1, d1: upTo(1), start: ['any', 'bookmark'], depth: 1 }
/** A public route read with credentials: profiles do not check them (no KV); posts do, overlapping the read. */
const PUBLIC_READ_SIGNED_IN: Budget = { kv: upTo(1), d1: upTo(1), start: ['any', 'bookmark'], depth: 1 }
const ADMIN_READ: Budget = { kv: 1, d1: upTo(2), start: ['primary'], depth: upTo(2) }
const SIGNED_IN_WRITE: Budget = { kv: 1, d1: upTo(2), start: ['primary'], depth: upTo(2) }
/**
 * Login, whatever it answers: the account where other reads go (the client's bookmark, or a
 * replica), then one trip to the primary: the session's batch, or the primary's row for a refusal.
 */
const LOGIN: Budget = { kv: 0, d1: 2, start: ['any', 'bookmark'], depth: 2 }
/** A provider's sign-in: the identity and the account at the primary, then the session's batch. */
const PROVIDER_LOGIN: Budget = { kv: 0, d1: upTo(2), start: ['primary'], depth: upTo(2) }
const REFRESH: Budget = { kv: 0, d1: 1, start: ['primary'], depth: 1 }
const LOGOUT: Budget = { kv: upTo(2), d1: 1, start: ['primary'], depth: upTo(2) }
/** The device list: security state, so read at the primary; the query overlaps the KV read. */
const SIGNED_IN_READ_AT_PRIMARY: Budget = { kv: 1, d1: upTo(1), start: ['primary'], depth: 1 }
/**
 * Signing out one device: the session lookup overlaps the KV read, then the D1 row and the KV key
 * go out together (as logout). A 404 writes nothing: one wave.
 */
const END_ONE_SESSION: Budget = { kv: upTo(2), d1: upTo(2), start: ['primary'], depth: upTo(2) }
const NO_BINDINGS: Budget = { kv: 0, d1: 0, start: ['any', 'bookmark', 'primary', 'none'], depth: 0 }
/** Anonymous writes of the credential and mailing-list flows (one lookup, one limit count, one batch). */
const ANONYMOUS_WRITE: Budget = { kv: 0, d1: upTo(3), start: ['primary'], depth: upTo(3) }
/**
 * Ending every session: keys first (one KV put per session revoked within the access-token
 * lifetime, all at once), one D1 batch, the caller's key last (design.md § Ending every session).
 * Round trips are traded for a failure at any step leaving the request retryable.
 */
const END_EVERY_SESSION: Budget = { kv: upTo(8), d1: upTo(5), start: ['primary'], depth: upTo(7) }
/** Managing the second factor: the user with the factor, the attempt counted, the accepted step, then one batch. */
const MFA_MANAGEMENT: Budget = { kv: 1, d1: upTo(4), start: ['primary'], depth: upTo(4) }
/**
 * Turning the factor on ends every other session, in the retryable order of ending every session
 * (keys first, one batch, the rest): the factor's four calls, then those of END_EVERY_SESSION.
 */
const MFA_TURNED_ON: Budget = { kv: upTo(8), d1: upTo(6), start: ['primary'], depth: upTo(8) }
/** The login's second step: the account, the factor and both attempt counts in one batch, the step, the session. */
const MFA_SECOND_STEP: Budget = { kv: 0, d1: upTo(3), start: ['primary'], depth: upTo(3) }
/** Passkey sign-in options: the challenge is a write, so one batch at the primary; the account is found in its SQL. */
const PASSKEY_OPTIONS: Budget = { kv: 0, d1: 1, start: ['primary'], depth: 1 }
/** Passkey sign-in: the challenge taken with the passkey's read, then the session's batch (a refusal stops after the first). */
const PASSKEY_SIGN_IN: Budget = { kv: 0, d1: upTo(2), start: ['primary'], depth: upTo(2) }
/** Registration options: the token's KV check, then one batch (its challenge is a write, behind the write gate). */
const PASSKEY_REGISTER_OPTIONS: Budget = { kv: 1, d1: 1, start: ['primary'], depth: 2 }
/** Registration: the KV check, the challenge taken, then the insert with its guards and the notice. */
const PASSKEY_REGISTER: Budget = { kv: 1, d1: 2, start: ['primary'], depth: 3 }

/**
 * A first native sign-in (OIDC): the identity lookup, one batch checking the email and the free
 * usernames, the account with its identity, then the session. The provider's JWKS is fetched
 * outside D1 and KV (cached per isolate and in the Cache API), so it is not counted here.
 */
const OIDC_SIGN_UP: Budget = { kv: 0, d1: upTo(4), start: ['primary'], depth: upTo(4) }

function json(body: unknown): string {
  return JSON.stringify(body)
}

async function createPost(token: string): Promise<number> {
  const res = await api('POST', '/posts', { title: uniqueName('ledger'), body: 'Counted round trips.' }, token)
  expect(res.status).toBe(201)
  return ((await res.json()) as { id: number }).id
}

describe('the round-trip ledger', () => {
  it('anonymous reads: a cache hit costs nothing; a miss at most one D1 query at a replica', async () => {
    const { user, tokens } = await registerAndLogin()
    const postId = await createPost(tokens.access_token)

    await expectBudget('GET /posts/{id} (cache miss)', await api('GET', `/posts/${postId}`), 200, ANONYMOUS_MISS)
    await expectBudget('GET /posts/{id} (cache hit)', await api('GET', `/posts/${postId}`), 200, ANONYMOUS_HIT)
    await expectBudget('GET /posts', await api('GET', '/posts?limit=5'), 200, ANONYMOUS_MISS)
    await expectBudget('GET /posts?q=', await api('GET', '/posts?q=counted&limit=5'), 200, ANONYMOUS_MISS)
    await expectBudget('GET /users', await api('GET', '/users?limit=5'), 200, ANONYMOUS_MISS)
    await expectBudget('GET /users/{id}', await api('GET', `/users/${user.id}`), 200, ANONYMOUS_MISS)
    await expectBudget('GET /users/{id}/posts', await api('GET', `/users/${user.id}/posts`), 200, ANONYMOUS_MISS)
    await expectBudget(
      'GET /users/{id}/posts (no such user)',
      await api('GET', '/users/987654321/posts'),
      404,
      ANONYMOUS_MISS,
    )
    await expectBudget('GET /posts/{id} (no such post)', await api('GET', '/posts/987654321'), 404, ANONYMOUS_MISS)
    const { slug } = (await (await api('GET', `/posts/${postId}`)).json()) as { slug: string }
    await expectBudget('GET /posts/by-slug/{slug}', await api('GET', `/posts/by-slug/${slug}`), 200, ANONYMOUS_MISS)
    await expectBudget(
      'GET /posts/by-slug/{slug} (cache hit)',
      await api('GET', `/posts/by-slug/${slug}`),
      200,
      ANONYMOUS_HIT,
    )
    await expectBudget('GET /feed', await api('GET', '/feed'), 200, ANONYMOUS_MISS)
    await expectBudget('GET /feed (cache hit)', await api('GET', '/feed'), 200, ANONYMOUS_HIT)
    await expectBudget('GET /posts (forged cursor)', await api('GET', '/posts?cursor=forged.mac'), 400, {
      ...ANONYMOUS_MISS,
      d1: 0,
      depth: 0,
    })
    await expectBudget('GET /openapi.json', await api('GET', '/openapi.json'), 200, NO_BINDINGS)
    await expectBudget('GET /.well-known/jwks.json', await api('GET', '/.well-known/jwks.json'), 200, NO_BINDINGS)
    await expectBudget('GET /health', await api('GET', '/health'), 200, {
      kv: 1,
      d1: 1,
      start: ['any', 'bookmark'],
      depth: 1,
    })
  })

  it('signed-in reads: one KV read overlapping at most one D1 query at a replica — one round trip', async () => {
    const { user, tokens } = await registerAndLogin()
    const postId = await createPost(tokens.access_token)
    const token = tokens.access_token

    await expectBudget('GET /users/me', await api('GET', '/users/me', undefined, token), 200, SIGNED_IN_READ)
    await expectBudget(
      'GET /posts (signed in)',
      await api('GET', '/posts?limit=5', undefined, token),
      200,
      PUBLIC_READ_SIGNED_IN,
    )
    await expectBudget(
      'GET /posts/{id} (signed in)',
      await api('GET', `/posts/${postId}`, undefined, token),
      200,
      PUBLIC_READ_SIGNED_IN,
    )
    await expectBudget(
      'GET /posts?status=draft (signed in)',
      await api('GET', '/posts?status=draft&limit=5', undefined, token),
      200,
      SIGNED_IN_READ,
    )
    await expectBudget(
      'GET /users/{id} (signed in)',
      await api('GET', `/users/${user.id}`, undefined, token),
      200,
      PUBLIC_READ_SIGNED_IN,
    )
    await expectBudget(
      'GET /users/{id}/posts (signed in)',
      await api('GET', `/users/${user.id}/posts`, undefined, token),
      200,
      PUBLIC_READ_SIGNED_IN,
    )
    await expectBudget('GET /users/me (no token)', await api('GET', '/users/me'), 401, {
      ...NO_BINDINGS,
      start: ['any'],
    })

    await api('POST', '/auth/logout', undefined, token)
    await expectBudget(
      'GET /users/me (revoked token)',
      await api('GET', '/users/me', undefined, token),
      401,
      SIGNED_IN_READ,
    )
  })

  it('a signed-in read with a bookmark starts there, and reads its own write', async () => {
    const { tokens } = await registerAndLogin()
    const renamed = uniqueName('bookmarked')
    const write = await api('PATCH', '/users/me', { username: renamed }, tokens.access_token)
    const bookmark = write.headers.get('x-d1-bookmark')
    expect(bookmark).toMatch(/^[0-9a-f]+(-[0-9a-f]+)+$/i)
    const read = await api('GET', '/users/me', undefined, tokens.access_token, { 'x-d1-bookmark': bookmark! })
    await expectBudget('GET /users/me (with bookmark)', read, 200, { ...SIGNED_IN_READ, start: ['bookmark'] })
    expect(((await read.json()) as { username: string }).username).toBe(renamed)
    expect(read.headers.get('x-d1-bookmark')).toMatch(/^[0-9a-f]+(-[0-9a-f]+)+$/i)
  })

  it('admin reads: at the primary, the admin row overlapping the KV read, then the query', async () => {
    const admin = await registerAndLogin()
    await makeAdmin(admin.user.id)
    const token = (await login(admin.user)).access_token
    const email = `${uniqueName('ledger')}@example.com`
    await api('POST', '/subscribers', { email })
    const { id } = (await env.DB.prepare('SELECT id FROM subscribers WHERE email = ?')
      .bind(email)
      .first<{ id: number }>())!

    await expectBudget('GET /subscribers', await api('GET', '/subscribers?limit=5', undefined, token), 200, ADMIN_READ)
    await expectBudget(
      'GET /subscribers/{id}',
      await api('GET', `/subscribers/${id}`, undefined, token),
      200,
      ADMIN_READ,
    )
    const exported = await expectBudget(
      'GET /subscribers/export',
      await api('GET', '/subscribers/export', undefined, token),
      200,
      ADMIN_READ,
    )
    await exported.body?.cancel()
    const { tokens: someone } = await registerAndLogin()
    await expectBudget(
      'GET /subscribers (not an admin)',
      await api('GET', '/subscribers', undefined, someone.access_token),
      403,
      ADMIN_READ,
    )
  })

  it('signed-in writes: at the primary, nothing written before the KV answer, at most two waves', async () => {
    const { user, tokens } = await registerAndLogin()
    const token = tokens.access_token
    const created = await expectBudget(
      'POST /posts',
      await api('POST', '/posts', { title: 'counted', body: 'counted' }, token),
      201,
      SIGNED_IN_WRITE,
    )
    const postId = ((await created.json()) as { id: number }).id
    await expectBudget(
      'PATCH /posts/{id}',
      await api('PATCH', `/posts/${postId}`, { title: 'recounted' }, token),
      200,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'PUT /posts/{id}',
      await api('PUT', `/posts/${postId}`, { title: 't', body: 'b' }, token),
      200,
      SIGNED_IN_WRITE,
    )
    const { tokens: other } = await registerAndLogin()
    await expectBudget(
      'PATCH /posts/{id} (not the author)',
      await api('PATCH', `/posts/${postId}`, { title: 'x' }, other.access_token),
      403,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'PATCH /posts/{id} (no such post)',
      await api('PATCH', '/posts/987654321', { title: 'x' }, token),
      404,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'DELETE /posts/{id}',
      await api('DELETE', `/posts/${postId}`, undefined, token),
      204,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'PATCH /users/me (username)',
      await api('PATCH', '/users/me', { username: uniqueName('renamed') }, token),
      200,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'PATCH /users/me (email)',
      await api('PATCH', '/users/me', { email: `${uniqueName('moved')}@example.com` }, token),
      200,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'PATCH /users/me (taken email)',
      await api('PATCH', '/users/me', { email: (await registerUser()).email }, token),
      409,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'POST /auth/email/resend',
      await api('POST', '/auth/email/resend', undefined, token),
      202,
      SIGNED_IN_WRITE,
    )
    await expectBudget('POST /posts (invalid body)', await api('POST', '/posts', { title: '' }, token), 400, {
      ...SIGNED_IN_WRITE,
      kv: upTo(1),
      d1: 0,
      depth: upTo(1),
    })
    expect(user.id).toBeGreaterThan(0)
  })

  it('login, refresh and logout', async () => {
    const user = await registerUser()
    const credentials = { username: user.username, password: user.password }
    const loggedIn = await expectBudget('POST /auth/token', await api('POST', '/auth/token', credentials), 200, LOGIN)
    await expectBudget(
      'POST /auth/token (wrong password)',
      await api('POST', '/auth/token', { ...credentials, password: 'wrong password' }),
      401,
      LOGIN,
    )
    await expectBudget(
      'POST /auth/token (unknown user)',
      await api('POST', '/auth/token', { username: uniqueName('nobody'), password: 'x' }),
      401,
      LOGIN,
    )
    const pair = (await loggedIn.json()) as TokenPair
    const refreshed = await expectBudget(
      'POST /auth/token/refresh',
      await api('POST', '/auth/token/refresh', { refresh_token: pair.refresh_token }),
      200,
      REFRESH,
    )
    const next = (await refreshed.json()) as TokenPair
    await expectBudget(
      'POST /auth/token/refresh (forged)',
      await api('POST', '/auth/token/refresh', { refresh_token: 'not.a.token' }),
      401,
      { ...REFRESH, d1: 0, depth: 0 },
    )
    await expectBudget(
      'POST /auth/logout',
      await api('POST', '/auth/logout', undefined, next.access_token),
      204,
      LOGOUT,
    )
    await expectBudget(
      'POST /auth/token/refresh (after logout)',
      await api('POST', '/auth/token/refresh', { refresh_token: next.refresh_token }),
      401,
      // Revoked within the access-token lifetime: the revocation is checked once more (and finished
      // if the request that revoked it failed half-way, src/sessions/rotate.ts completeRevocation).
      { ...REFRESH, kv: 1, d1: upTo(2), depth: upTo(3) },
    )
  })

  it('devices: the session list and signing out one device', async () => {
    const user = await registerUser()
    const laptop = await login(user)
    await login(user)
    const listed = await expectBudget(
      'GET /auth/sessions',
      await api('GET', '/auth/sessions', undefined, laptop.access_token),
      200,
      SIGNED_IN_READ_AT_PRIMARY,
    )
    const { results } = (await listed.json()) as { results: { id: string; current: boolean }[] }
    const phone = results.find((session) => !session.current)!.id
    const end = (id: string) => api('DELETE', `/auth/sessions/${id}`, undefined, laptop.access_token)
    await expectBudget('DELETE /auth/sessions/{id}', await end(phone), 204, END_ONE_SESSION)
    // Ended within the access-token lifetime: its revocation is checked, in case an earlier attempt failed before writing it.
    // Two waves at most: the handler's revocation read follows its D1 read, but it joins the
    // authentication's read when that one is still on its way (how fast each answers decides).
    await expectBudget('DELETE /auth/sessions/{id} (just ended)', await end(phone), 404, {
      ...END_ONE_SESSION,
      kv: 2,
      d1: 1,
      depth: upTo(2),
    })
    await expectBudget('DELETE /auth/sessions/{id} (unknown)', await end(crypto.randomUUID()), 404, {
      ...END_ONE_SESSION,
      kv: 1,
      d1: 1,
      depth: 1,
    })
  })

  it('anonymous credential and mailing-list writes', async () => {
    const username = uniqueName('ledger')
    const email = `${username}@example.com`
    await expectBudget(
      'POST /auth/register',
      await api('POST', '/auth/register', { username, email, password: 'correct horse battery staple' }),
      201,
      { ...ANONYMOUS_WRITE, d1: upTo(2), depth: upTo(2) },
    )
    await expectBudget(
      'POST /auth/register (taken)',
      await api('POST', '/auth/register', { username, email, password: 'correct horse battery staple' }),
      409,
      { ...ANONYMOUS_WRITE, d1: upTo(2), depth: upTo(2) },
    )
    await expectBudget(
      'POST /auth/email/verify',
      await api('POST', '/auth/email/verify', { token: await tokenFromEmail(email, 'verify-email') }),
      204,
      ANONYMOUS_WRITE,
    )
    await expectBudget(
      'POST /auth/password/reset',
      await api('POST', '/auth/password/reset', { email }),
      202,
      ANONYMOUS_WRITE,
    )
    await expectBudget(
      'POST /auth/password/reset (unknown)',
      await api('POST', '/auth/password/reset', { email: `${uniqueName('nobody')}@example.com` }),
      202,
      ANONYMOUS_WRITE,
    )
    await expectBudget(
      'POST /auth/password/reset/confirm (bad link)',
      await api('POST', '/auth/password/reset/confirm', { token: 'nope', new_password: 'another password' }),
      400,
      ANONYMOUS_WRITE,
    )
    await expectBudget('POST /subscribers', await api('POST', '/subscribers', { email }), 202, ANONYMOUS_WRITE)
    await expectBudget(
      'POST /subscribers/confirm',
      await api('POST', '/subscribers/confirm', { token: await tokenFromEmail(email, 'confirm-subscription') }),
      200,
      ANONYMOUS_WRITE,
    )
    await expectBudget(
      'POST /subscribers/unsubscribe (bad token)',
      await api('POST', '/subscribers/unsubscribe', { token: 'x'.repeat(22) }),
      400,
      ANONYMOUS_WRITE,
    )
    await expectBudget(
      'POST /auth/token/verify',
      await api('POST', '/auth/token/verify', {
        token: (await login({ username, password: 'correct horse battery staple' })).access_token,
      }),
      200,
      { kv: 1, d1: 0, start: ['primary'], depth: 1 },
    )
  })

  it('reauthentication: the user, the password, the session renewed', async () => {
    const { user, tokens } = await registerAndLogin()
    await expectBudget(
      'POST /auth/reauthenticate',
      await api('POST', '/auth/reauthenticate', { password: user.password }, tokens.access_token),
      200,
      SIGNED_IN_WRITE,
    )
    await expectBudget(
      'POST /auth/reauthenticate (wrong password)',
      await api('POST', '/auth/reauthenticate', { password: 'not the password' }, tokens.access_token),
      401,
      SIGNED_IN_WRITE,
    )
  })

  it('ending every session (logout-all, password change, account deletion)', async () => {
    const signIn = async (user: RegisteredUser) => (await login(user)).access_token
    const { user, tokens } = await registerAndLogin()
    await login(user)
    await expectBudget(
      'POST /auth/logout-all',
      await api('POST', '/auth/logout-all', undefined, tokens.access_token),
      204,
      END_EVERY_SESSION,
    )
    const token = await signIn(user)
    await expectBudget(
      'POST /auth/password/change',
      await api(
        'POST',
        '/auth/password/change',
        json({ old_password: user.password, new_password: 'a changed password' }),
        token,
      ),
      200,
      END_EVERY_SESSION,
    )
    const changed = { ...user, password: 'a changed password' }
    await expectBudget(
      'DELETE /users/me',
      await api('DELETE', '/users/me', { password: changed.password }, await signIn(changed)),
      204,
      END_EVERY_SESSION,
    )
  })
})

describe('the round-trip ledger: two-factor sign-in', () => {
  // The worker runs in this isolate and reads the same Date: stopped mid-step, no code straddles a
  // step boundary however slow the machine is.
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Math.floor(Date.now() / 30_000) * 30_000 + 15_000)
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('enrolment and the second step of a login', async () => {
    const { Secret, TOTP } = await import('otpauth')
    const codeAt = (secret: string, offset: number) =>
      new TOTP({ secret: Secret.fromBase32(secret), period: 30, digits: 6, algorithm: 'SHA1' }).generate({
        timestamp: Date.now() + offset * 30_000,
      })
    const { user, tokens } = await registerAndLogin()
    const token = tokens.access_token
    const started = await expectBudget(
      'POST /auth/mfa/totp',
      await api('POST', '/auth/mfa/totp', undefined, token),
      200,
      SIGNED_IN_WRITE,
    )
    const { secret } = (await started.json()) as { secret: string }
    await expectBudget(
      'POST /auth/mfa/totp/confirm',
      await api('POST', '/auth/mfa/totp/confirm', { code: codeAt(secret, -1) }, token),
      200,
      MFA_TURNED_ON,
    )
    const password = await api('POST', '/auth/token', { username: user.username, password: user.password })
    const { mfa_token: mfaToken } = (await expectBudget('POST /auth/token (mfa_required)', password, 401, LOGIN).then(
      (res) => res.json(),
    )) as { mfa_token: string }
    await expectBudget(
      'POST /auth/mfa/verify',
      await api('POST', '/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(secret, 0) }),
      200,
      MFA_SECOND_STEP,
    )
    await expectBudget(
      'POST /auth/mfa/verify (spent MFA token)',
      await api('POST', '/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(secret, 0) }),
      401,
      MFA_SECOND_STEP,
    )
    await expectBudget(
      'POST /auth/reauthenticate (code)',
      await api('POST', '/auth/reauthenticate', { code: codeAt(secret, 1) }, token),
      200,
      MFA_MANAGEMENT,
    )
    vi.setSystemTime(Date.now() + 30_000)
    await expectBudget(
      'POST /auth/mfa/recovery-codes',
      await api('POST', '/auth/mfa/recovery-codes', { code: codeAt(secret, 1) }, token),
      200,
      MFA_MANAGEMENT,
    )
  })
})

describe('the round-trip ledger: passkeys', () => {
  it('options, registration, sign-in (and a refused one), the list, a rename, a removal, the app files', async () => {
    const { user, tokens } = await registerAndLogin()
    const token = tokens.access_token
    const authenticator = await SoftAuthenticator.create()
    const json = <T>(res: Response): Promise<T> => res.json() as Promise<T>
    type Started = { challenge_id: string; options: { challenge: string; user: { id: string } } }
    const registration = await json<Started>(
      await expectBudget(
        'POST /auth/passkeys/register/options',
        await api('POST', '/auth/passkeys/register/options', undefined, token),
        200,
        PASSKEY_REGISTER_OPTIONS,
      ),
    )
    const passkey = await json<{ id: number }>(
      await expectBudget(
        'POST /auth/passkeys/register',
        await api(
          'POST',
          '/auth/passkeys/register',
          { challenge_id: registration.challenge_id, response: await authenticator.register(registration.options) },
          token,
        ),
        201,
        PASSKEY_REGISTER,
      ),
    )
    for (const body of [{}, { username: user.username }, { username: uniqueName('nobody') }]) {
      await expectBudget(
        `POST /auth/passkeys/login/options ${JSON.stringify(Object.keys(body))}`,
        await api('POST', '/auth/passkeys/login/options', body),
        200,
        PASSKEY_OPTIONS,
      )
    }
    const signIn = await json<Started>(await api('POST', '/auth/passkeys/login/options', {}))
    const assertion = { challenge_id: signIn.challenge_id, response: await authenticator.assert(signIn.options) }
    await expectBudget(
      'POST /auth/passkeys/login',
      await api('POST', '/auth/passkeys/login', assertion),
      200,
      PASSKEY_SIGN_IN,
    )
    await expectBudget(
      'POST /auth/passkeys/login (the challenge used)',
      await api('POST', '/auth/passkeys/login', assertion),
      401,
      PASSKEY_SIGN_IN,
    )
    await expectBudget(
      'GET /auth/passkeys',
      await api('GET', '/auth/passkeys', undefined, token),
      200,
      SIGNED_IN_READ_AT_PRIMARY,
    )
    await expectBudget(
      'PATCH /auth/passkeys/{id}',
      await api('PATCH', `/auth/passkeys/${passkey.id}`, { name: 'renamed' }, token),
      200,
      SIGNED_IN_WRITE,
    )
    for (const status of [204, 404]) {
      await expectBudget(
        `DELETE /auth/passkeys/{id} (${status})`,
        await api('DELETE', `/auth/passkeys/${passkey.id}`, undefined, token),
        status,
        SIGNED_IN_WRITE,
      )
    }
    for (const path of ['/.well-known/apple-app-site-association', '/.well-known/assetlinks.json']) {
      await expectBudget(`GET ${path}`, await api('GET', path), 404, NO_BINDINGS)
    }
  })
})

describe('the round-trip ledger: native sign-in (OIDC)', () => {
  it('sign-up, sign-in, a refused token, link and unlink', async () => {
    const sub = String(Math.floor(Math.random() * 1e12))
    const email = `${uniqueName('ledger')}@gmail.com`
    const idToken = (subject: string, address: string) =>
      signIdToken({
        kid: 'google-1',
        iss: 'https://accounts.google.com',
        aud: TEST_PROVIDERS.google.audiences[0],
        sub: subject,
        email: address,
        email_verified: true,
        nonce: 'ledger-nonce',
      })
    const signIn = async (subject: string, address: string) =>
      api('POST', '/auth/oidc/google', { id_token: await idToken(subject, address), nonce: 'ledger-nonce' })
    await expectBudget('POST /auth/oidc/{provider} (new account)', await signIn(sub, email), 200, OIDC_SIGN_UP)
    await expectBudget('POST /auth/oidc/{provider}', await signIn(sub, email), 200, PROVIDER_LOGIN)
    await expectBudget('POST /auth/oidc/{provider} (account exists)', await signIn(`${sub}0`, email), 409, OIDC_SIGN_UP)
    await expectBudget(
      'POST /auth/oidc/{provider} (bad token)',
      await api('POST', '/auth/oidc/google', { id_token: 'not.a.jwt' }),
      401,
      { ...PROVIDER_LOGIN, d1: 0, depth: 0, start: ['primary', 'none'] },
    )

    const { tokens } = await registerAndLogin()
    const linkBody = { id_token: await idToken(`${sub}1`, `${uniqueName('link')}@gmail.com`), nonce: 'ledger-nonce' }
    await expectBudget(
      'POST /auth/oidc/{provider}/link',
      await api('POST', '/auth/oidc/google/link', linkBody, tokens.access_token),
      204,
      // The ID token is spent in the first batch, a write, which waits for the revocation answer.
      { ...SIGNED_IN_WRITE, depth: upTo(3) },
    )
    await expectBudget(
      'DELETE /auth/oidc/{provider}/link',
      await api('DELETE', '/auth/oidc/google/link', undefined, tokens.access_token),
      204,
      // The unlink (a write, after the revocation answer), then the owner's notice.
      { ...SIGNED_IN_WRITE, depth: upTo(3) },
    )
    await expectBudget(
      'DELETE /auth/oidc/{provider}/link (not linked)',
      await api('DELETE', '/auth/oidc/google/link', undefined, tokens.access_token),
      404,
      SIGNED_IN_WRITE,
    )
  })
})
