import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { stopTheClockMidStep, totpCodeAt } from '../../../test/stopped-clock'
import {
  api,
  decodeJwt,
  expectProblem,
  login,
  mintToken,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  tokenFromEmail,
  uniqueName,
} from '../../../test/helpers'
import type { RegisteredUser, TokenPair } from '../../../test/helpers'
import { TEST_PROVIDERS, signIdToken } from '../../../test/oidc-provider'

// Step-up over HTTP: access tokens carry `auth_time`; lasting changes (linking a provider, the
// second factor, new recovery codes, a new email, deleting the account) need it within
// REAUTH_MAX_AGE (600 s by default); POST /auth/reauthenticate renews it for the same session with
// the password, a second factor's code or a linked provider's ID token; and the security notices
// those changes queue.
//
// The worker runs in this isolate (test/helpers.ts fetchWorker), so it reads the same Date as the
// test: each test stops the clock in the middle of a 30 s TOTP step and moves it on by hand, so no
// age depends on how fast the machine is and no code straddles a step boundary.

const STEP_MS = 30_000
const REAUTH_MAX_AGE_S = 600
/** Past REAUTH_MAX_AGE by a whole TOTP step, so the clock stays in the middle of a step. */
const PAST_REAUTH_MAX_AGE_MS = REAUTH_MAX_AGE_S * 1000 + STEP_MS
/** REFRESH_REUSE_GRACE, the default of src/config.ts. */
const REUSE_GRACE_MS = 10_000

const SUBJECTS = {
  linked: 'A sign-in method was added to your edgepress account',
  unlinked: 'A sign-in method was removed from your edgepress account',
  emailChanged: 'The email address of your edgepress account was changed',
  newRecoveryCodes: 'New recovery codes for your edgepress account',
  recoveryCodeUsed: 'A recovery code was used to sign in to edgepress',
}

const { advance } = stopTheClockMidStep()

const nowSeconds = (): number => Math.floor(Date.now() / 1000)

async function refresh(refreshToken: string): Promise<TokenPair> {
  const res = await api('POST', '/auth/token/refresh', { refresh_token: refreshToken })
  expect(res.status, await res.clone().text()).toBe(200)
  return (await res.json()) as TokenPair
}

/**
 * Lets the sign-in that started `pair`'s session grow older than REAUTH_MAX_AGE while the session
 * lives on: the clock moves past it and the session refreshes (the access token alone would have
 * expired, ACCESS_TOKEN_TTL being shorter), which keeps the session's auth_time.
 */
async function ageSession(pair: TokenPair): Promise<TokenPair> {
  advance(PAST_REAUTH_MAX_AGE_MS)
  return refresh(pair.refresh_token)
}

function reauthenticate(body: unknown, accessToken: string, headers: Record<string, string> = {}): Promise<Response> {
  return api('POST', '/auth/reauthenticate', body, accessToken, headers)
}

/** Steps up with the password; returns the session's new pair. */
async function stepUp(user: Pick<RegisteredUser, 'password'>, pair: TokenPair): Promise<TokenPair> {
  const res = await reauthenticate({ password: user.password }, pair.access_token)
  expect(res.status, await res.clone().text()).toBe(200)
  return (await res.json()) as TokenPair
}

function claimsOf(token: string): Record<string, unknown> {
  return decodeJwt(token).payload
}

async function me(accessToken: string): Promise<{
  id: number
  email: string
  email_verified: boolean
  mfa_enabled: boolean
  providers: string[]
}> {
  const res = await api('GET', '/users/me', undefined, accessToken)
  expect(res.status, await res.clone().text()).toBe(200)
  return res.json()
}

async function subjectsTo(email: string): Promise<string[]> {
  return (await outboxMessagesTo(email)).map((message) => message.subject)
}

interface ProviderToken {
  id_token: string
  nonce: string
  sub: string
  email: string
}

/** A Google ID token for a Gmail address (so Google's email_verified counts), signed now. */
async function googleToken(options: { sub?: string; email?: string } = {}): Promise<ProviderToken> {
  const nonce = crypto.randomUUID()
  const sub = options.sub ?? String(100_000_000 + Math.floor(Math.random() * 1e9))
  const email = options.email ?? `${uniqueName('g')}@gmail.com`
  const id_token = await signIdToken({
    kid: 'google-1',
    iss: 'https://accounts.google.com',
    aud: TEST_PROVIDERS.google.audiences[0],
    email_verified: true,
    nonce,
    sub,
    email,
  })
  return { id_token, nonce, sub, email }
}

function linkGoogle(
  token: ProviderToken,
  accessToken: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return api('POST', '/auth/oidc/google/link', { id_token: token.id_token, nonce: token.nonce }, accessToken, headers)
}

const withGoogle = (token: ProviderToken) => ({ provider: 'google', id_token: token.id_token, nonce: token.nonce })

/** A code no authenticator shows now. */
function wrongCode(secret: string): string {
  const near = [-1, 0, 1].map((offset) => totpCodeAt(secret, offset))
  return ['000000', '111111', '222222', '333333'].find((code) => !near.includes(code))!
}

async function startEnrolment(accessToken: string): Promise<string> {
  const res = await api('POST', '/auth/mfa/totp', undefined, accessToken)
  expect(res.status, await res.clone().text()).toBe(200)
  return ((await res.json()) as { secret: string }).secret
}

/**
 * Turns the factor on in `pair`'s session (a fresh sign-in); the confirmation uses the previous
 * step's code, so the current one is still unused.
 */
async function enrolTotp(pair: TokenPair): Promise<{ secret: string; recoveryCodes: string[] }> {
  const secret = await startEnrolment(pair.access_token)
  const res = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret, -1) }, pair.access_token)
  expect(res.status, await res.clone().text()).toBe(200)
  return { secret, recoveryCodes: ((await res.json()) as { recovery_codes: string[] }).recovery_codes }
}

/** An account created by Google sign-in (a verified Gmail address): no password. */
async function providerAccount(): Promise<{ pair: TokenPair; sub: string; id: number }> {
  const token = await googleToken()
  const res = await api('POST', '/auth/oidc/google', { id_token: token.id_token, nonce: token.nonce })
  expect(res.status, await res.clone().text()).toBe(200)
  const pair = (await res.json()) as TokenPair
  return { pair, sub: token.sub, id: Number(claimsOf(pair.access_token).sub) }
}

async function recoveryCodeHashes(userId: number): Promise<string[]> {
  const { results } = await env.DB.prepare(
    'SELECT code_hash FROM mfa_recovery_codes WHERE user_id = ? ORDER BY code_hash',
  )
    .bind(userId)
    .all<{ code_hash: string }>()
  return results.map((row) => row.code_hash)
}

async function hasFactorRow(userId: number): Promise<boolean> {
  const row = await env.DB.prepare('SELECT 1 AS one FROM mfa_factors WHERE user_id = ?').bind(userId).first()
  return row !== null
}

describe('auth_time in the tokens', () => {
  it('a login stamps both tokens with its time; a refresh keeps it while iat moves on', async () => {
    const loginTime = nowSeconds()
    const { tokens } = await registerAndLogin()
    expect(claimsOf(tokens.access_token).auth_time).toBe(loginTime)
    expect(claimsOf(tokens.refresh_token).auth_time).toBe(loginTime)

    advance(120_000)
    const refreshed = await refresh(tokens.refresh_token)
    for (const token of [refreshed.access_token, refreshed.refresh_token]) {
      expect(claimsOf(token).auth_time).toBe(loginTime)
      expect(claimsOf(token).iat).toBe(loginTime + 120)
    }
    advance(120_000)
    const again = await refresh(refreshed.refresh_token)
    expect(claimsOf(again.access_token).auth_time).toBe(loginTime)
    expect(claimsOf(again.refresh_token).auth_time).toBe(loginTime)
  })

  it('a sign-in exactly REAUTH_MAX_AGE old still counts as recent; one second older does not', async () => {
    const { tokens } = await registerAndLogin()
    advance(REAUTH_MAX_AGE_S * 1000)
    const refreshed = await refresh(tokens.refresh_token)
    expect((await api('POST', '/auth/mfa/totp', undefined, refreshed.access_token)).status).toBe(200)
    advance(1000)
    await expectProblem(
      await api('POST', '/auth/mfa/totp', undefined, refreshed.access_token),
      403,
      'reauthentication_required',
    )
  })

  it('a token without auth_time (minted elsewhere) counts as a sign-in of unknown age: never recent', async () => {
    const user = await registerUser()
    const withoutAuthTime = await mintToken({ sub: String(user.id) })
    expect(claimsOf(withoutAuthTime)).not.toHaveProperty('auth_time')
    // An ordinary request is fine; a lasting change is not.
    expect((await api('GET', '/users/me', undefined, withoutAuthTime)).status).toBe(200)
    const problem = await expectProblem(
      await api('POST', '/auth/mfa/totp', undefined, withoutAuthTime),
      403,
      'reauthentication_required',
    )
    expect(problem.detail).toContain('POST /api/v1/auth/reauthenticate')
    // The same token with a current auth_time passes: the claim is what decides.
    const withAuthTime = await mintToken({ sub: String(user.id), auth_time: nowSeconds() })
    expect((await api('POST', '/auth/mfa/totp', undefined, withAuthTime)).status).toBe(200)
  })
})

interface LastingChange {
  name: string
  /** A signed-in account on which the change would succeed. */
  setup(): Promise<{ user: RegisteredUser; tokens: TokenPair; secret?: string; newEmail?: string; sub?: string }>
  attempt(ctx: Awaited<ReturnType<LastingChange['setup']>>, accessToken: string): Promise<Response>
  /** Whether the change took effect. */
  applied(ctx: Awaited<ReturnType<LastingChange['setup']>>, accessToken: string): Promise<boolean>
  status: number
}

const LASTING_CHANGES: LastingChange[] = [
  {
    name: 'linking a provider (POST /auth/oidc/{provider}/link)',
    setup: async () => ({ ...(await registerAndLogin()), sub: String(100_000_000 + Math.floor(Math.random() * 1e9)) }),
    // Signed when first sent and sent again after the step-up: the refused link did not spend it.
    attempt: (() => {
      const tokens = new Map<string, Promise<ProviderToken>>()
      return async (ctx, accessToken) => {
        if (!tokens.has(ctx.sub!)) tokens.set(ctx.sub!, googleToken({ sub: ctx.sub! }))
        return linkGoogle(await tokens.get(ctx.sub!)!, accessToken)
      }
    })(),
    applied: async (_ctx, accessToken) => (await me(accessToken)).providers.includes('google'),
    status: 204,
  },
  {
    name: 'starting a TOTP enrolment (POST /auth/mfa/totp)',
    setup: () => registerAndLogin(),
    attempt: (_ctx, accessToken) => api('POST', '/auth/mfa/totp', undefined, accessToken),
    applied: (ctx) => hasFactorRow(ctx.user.id),
    status: 200,
  },
  {
    name: 'confirming TOTP (POST /auth/mfa/totp/confirm)',
    setup: async () => {
      const signedIn = await registerAndLogin()
      return { ...signedIn, secret: await startEnrolment(signedIn.tokens.access_token) }
    },
    attempt: (ctx, accessToken) =>
      api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(ctx.secret!) }, accessToken),
    applied: async (_ctx, accessToken) => (await me(accessToken)).mfa_enabled,
    status: 200,
  },
  {
    name: 'new recovery codes (POST /auth/mfa/recovery-codes)',
    setup: async () => {
      const signedIn = await registerAndLogin()
      const { secret } = await enrolTotp(signedIn.tokens)
      return { ...signedIn, secret }
    },
    attempt: (ctx, accessToken) =>
      api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(ctx.secret!) }, accessToken),
    applied: async (ctx) => (await subjectsTo(ctx.user.email)).includes(SUBJECTS.newRecoveryCodes),
    status: 200,
  },
  {
    name: 'a new email address (PATCH /users/me)',
    setup: async () => ({ ...(await registerAndLogin()), newEmail: `${uniqueName('moved')}@example.com` }),
    attempt: (ctx, accessToken) => api('PATCH', '/users/me', { email: ctx.newEmail }, accessToken),
    applied: async (ctx, accessToken) => (await me(accessToken)).email === ctx.newEmail,
    status: 200,
  },
  {
    name: 'deleting the account (DELETE /users/me)',
    setup: () => registerAndLogin(),
    attempt: (ctx, accessToken) => api('DELETE', '/users/me', { password: ctx.user.password }, accessToken),
    applied: async (ctx) =>
      (await api('POST', '/auth/token', { username: ctx.user.username, password: ctx.user.password })).status === 401,
    status: 204,
  },
]

describe('lasting changes need a recent sign-in', () => {
  it.each(LASTING_CHANGES)(
    '$name: 403 reauthentication_required once the sign-in is older than REAUTH_MAX_AGE, then works after a step-up',
    async (change) => {
      const ctx = await change.setup()
      const stale = await ageSession(ctx.tokens)
      await expectProblem(await change.attempt(ctx, stale.access_token), 403, 'reauthentication_required')
      expect(await change.applied(ctx, stale.access_token)).toBe(false)

      const fresh = await stepUp(ctx.user, stale)
      const res = await change.attempt(ctx, fresh.access_token)
      expect(res.status, await res.clone().text()).toBe(change.status)
      expect(await change.applied(ctx, fresh.access_token)).toBe(true)
    },
  )

  it('a username-only change needs no recent sign-in', async () => {
    const { tokens } = await registerAndLogin()
    const stale = await ageSession(tokens)
    const username = uniqueName('renamed')
    const res = await api('PATCH', '/users/me', { username }, stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    expect(await res.json()).toMatchObject({ username })
  })

  it('an email that differs only in case is not a new address: no step-up, still verified, no notice', async () => {
    const { user, tokens } = await registerAndLogin()
    const verified = await api('POST', '/auth/email/verify', {
      token: await tokenFromEmail(user.email, 'verify-email'),
    })
    expect(verified.status).toBe(204)
    const stale = await ageSession(tokens)
    const before = await outboxMessagesTo(user.email)

    const res = await api('PATCH', '/users/me', { email: user.email.toUpperCase() }, stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    expect((await res.json()) as { email_verified: boolean }).toMatchObject({ email_verified: true })
    expect(await outboxMessagesTo(user.email)).toHaveLength(before.length)
  })
})

describe('POST /auth/reauthenticate with the password', () => {
  it('answers a new pair for the same session with a fresh auth_time; later refreshes keep it', async () => {
    const { user, tokens } = await registerAndLogin()
    const loginTime = nowSeconds()
    const stale = await ageSession(tokens)
    const res = await reauthenticate({ password: user.password }, stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    expect(res.headers.get('cache-control')).toContain('no-store')
    expect(res.headers.get('set-cookie')).toBeNull()
    const fresh = (await res.json()) as TokenPair
    expect(fresh.token_type).toBe('Bearer')

    const sid = claimsOf(stale.access_token).sid
    for (const token of [fresh.access_token, fresh.refresh_token]) {
      expect(claimsOf(token).sid).toBe(sid)
      expect(claimsOf(token).auth_time).toBe(nowSeconds())
    }
    expect(nowSeconds()).toBeGreaterThan(loginTime + REAUTH_MAX_AGE_S)
    expect(claimsOf(fresh.refresh_token).jti).not.toBe(claimsOf(stale.refresh_token).jti)

    advance(60_000)
    const refreshed = await refresh(fresh.refresh_token)
    expect(claimsOf(refreshed.access_token).auth_time).toBe(nowSeconds() - 60)
    expect(claimsOf(refreshed.access_token).sid).toBe(sid)
  })

  it('the refresh token the session had before counts as rotated: the grace window, then reuse ends the session', async () => {
    const { user, tokens } = await registerAndLogin()
    const stale = await ageSession(tokens)
    const fresh = await stepUp(user, stale)

    // Within REFRESH_REUSE_GRACE: the session's current refresh token and an access token with the new auth_time.
    const replay = await refresh(stale.refresh_token)
    expect(claimsOf(replay.refresh_token).jti).toBe(claimsOf(fresh.refresh_token).jti)
    expect(claimsOf(replay.access_token).auth_time).toBe(claimsOf(fresh.access_token).auth_time)

    advance(REUSE_GRACE_MS + 1000)
    await expectProblem(
      await api('POST', '/auth/token/refresh', { refresh_token: stale.refresh_token }),
      401,
      'token_reused',
    )
    await expectProblem(await api('GET', '/users/me', undefined, fresh.access_token), 401, 'token_revoked')
  })

  it('a wrong password is 401 invalid_credentials and changes nothing', async () => {
    const { tokens } = await registerAndLogin()
    const stale = await ageSession(tokens)
    await expectProblem(
      await reauthenticate({ password: 'not the password at all' }, stale.access_token),
      401,
      'invalid_credentials',
    )
    await expectProblem(
      await api('POST', '/auth/mfa/totp', undefined, stale.access_token),
      403,
      'reauthentication_required',
    )
    // The session's refresh token is still its current one (an ordinary rotation, not a replay), and the sign-in as old.
    const next = await refresh(stale.refresh_token)
    expect(claimsOf(next.access_token).auth_time).toBe(claimsOf(stale.access_token).auth_time)
  })

  it('needs a live session: a token whose session does not exist is 401 token_revoked', async () => {
    const user = await registerUser()
    const orphan = await mintToken({ sub: String(user.id), auth_time: nowSeconds() })
    await expectProblem(await reauthenticate({ password: user.password }, orphan), 401, 'token_revoked')
  })

  it('needs a signed-in caller: 401 without a token', async () => {
    await expectProblem(
      await api('POST', '/auth/reauthenticate', { password: 'whatever it is' }),
      401,
      'not_authenticated',
    )
  })
})

describe('POST /auth/reauthenticate with a second factor', () => {
  it('a TOTP code steps up; the same code again is refused', async () => {
    const { tokens } = await registerAndLogin()
    const { secret } = await enrolTotp(tokens)
    const stale = await ageSession(tokens)
    const code = totpCodeAt(secret)
    const res = await reauthenticate({ code }, stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    const fresh = (await res.json()) as TokenPair
    expect(claimsOf(fresh.access_token).auth_time).toBe(nowSeconds())
    expect(claimsOf(fresh.access_token).sid).toBe(claimsOf(stale.access_token).sid)
    advance(STEP_MS)
    expect(
      (await api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(secret) }, fresh.access_token)).status,
    ).toBe(200)

    await expectProblem(await reauthenticate({ code }, fresh.access_token), 401, 'invalid_credentials')
  })

  it('a wrong code is 401 invalid_credentials and the sign-in stays old', async () => {
    const { tokens } = await registerAndLogin()
    const { secret } = await enrolTotp(tokens)
    const stale = await ageSession(tokens)
    await expectProblem(
      await reauthenticate({ code: wrongCode(secret) }, stale.access_token),
      401,
      'invalid_credentials',
    )
    await expectProblem(
      await api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(secret) }, stale.access_token),
      403,
      'reauthentication_required',
    )
  })

  it('a recovery code steps up too, is spent, and the owner gets the recovery-code email', async () => {
    const { user, tokens } = await registerAndLogin()
    const { recoveryCodes } = await enrolTotp(tokens)
    const stale = await ageSession(tokens)
    expect(await subjectsTo(user.email)).not.toContain(SUBJECTS.recoveryCodeUsed)

    const res = await reauthenticate({ code: recoveryCodes[0] }, stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    const fresh = (await res.json()) as TokenPair
    expect(claimsOf(fresh.access_token).auth_time).toBe(nowSeconds())
    expect((await subjectsTo(user.email)).filter((subject) => subject === SUBJECTS.recoveryCodeUsed)).toHaveLength(1)

    await expectProblem(
      await reauthenticate({ code: recoveryCodes[0] }, fresh.access_token),
      401,
      'invalid_credentials',
    )
  })

  it('without a factor that is on, a code is 409 conflict (none, or an enrolment not yet confirmed)', async () => {
    const { tokens } = await registerAndLogin()
    await expectProblem(await reauthenticate({ code: '123456' }, tokens.access_token), 409, 'conflict')
    const secret = await startEnrolment(tokens.access_token)
    await expectProblem(await reauthenticate({ code: totpCodeAt(secret) }, tokens.access_token), 409, 'conflict')
  })
})

describe('POST /auth/reauthenticate with a linked provider', () => {
  async function withLinkedGoogle(): Promise<{ user: RegisteredUser; tokens: TokenPair; sub: string }> {
    const { user, tokens } = await registerAndLogin()
    const token = await googleToken()
    expect((await linkGoogle(token, tokens.access_token)).status).toBe(204)
    return { user, tokens, sub: token.sub }
  }

  it('an ID token of the linked identity steps up, once: the same token again is refused', async () => {
    const { tokens, sub } = await withLinkedGoogle()
    const stale = await ageSession(tokens)
    const token = await googleToken({ sub })
    const res = await reauthenticate(withGoogle(token), stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    const fresh = (await res.json()) as TokenPair
    expect(claimsOf(fresh.access_token).auth_time).toBe(nowSeconds())
    expect(claimsOf(fresh.access_token).sid).toBe(claimsOf(stale.access_token).sid)

    await expectProblem(await reauthenticate(withGoogle(token), fresh.access_token), 401, 'token_invalid')
  })

  it('an identity linked to another account does not vouch: 401 token_invalid', async () => {
    const other = await withLinkedGoogle()
    const { tokens } = await withLinkedGoogle()
    const stale = await ageSession(tokens)
    const othersToken = await googleToken({ sub: other.sub })
    await expectProblem(await reauthenticate(withGoogle(othersToken), stale.access_token), 401, 'token_invalid')
    await expectProblem(
      await api('POST', '/auth/mfa/totp', undefined, stale.access_token),
      403,
      'reauthentication_required',
    )
  })

  it('an identity linked to no account, or an unknown provider, does not vouch: 401 token_invalid', async () => {
    const { tokens } = await withLinkedGoogle()
    const stale = await ageSession(tokens)
    await expectProblem(await reauthenticate(withGoogle(await googleToken()), stale.access_token), 401, 'token_invalid')
    const token = await googleToken()
    await expectProblem(
      await reauthenticate({ provider: 'facebook', id_token: token.id_token, nonce: token.nonce }, stale.access_token),
      401,
      'token_invalid',
    )
  })
})

describe('POST /auth/reauthenticate: the body names exactly one way', () => {
  it.each([
    ['nothing', {}],
    ['a password and a code', { password: 'correct horse battery staple', code: '123456' }],
    ['a password and a provider', { password: 'correct horse battery staple', provider: 'google', id_token: 'x.y.z' }],
    ['a code and a provider', { code: '123456', provider: 'google', id_token: 'x.y.z' }],
    ['a provider without an ID token', { provider: 'google' }],
    ['an ID token without a provider', { id_token: 'x.y.z' }],
  ])('%s: 400 validation_failed', async (_name, body) => {
    const { tokens } = await registerAndLogin()
    await expectProblem(await reauthenticate(body, tokens.access_token), 400, 'validation_failed')
  })
})

describe('POST /auth/reauthenticate in cookie mode', () => {
  const ACCESS_COOKIE = '__Host-edgepress-access'
  const REFRESH_COOKIE = '__Host-edgepress-refresh'
  const CSRF_COOKIE = '__Host-edgepress-csrf'

  interface CookieSession {
    cookies: Map<string, string>
    csrf: string
  }

  function cookiesOf(res: Response): Map<string, string> {
    const lines = (res.headers as Headers & { getSetCookie(): string[] }).getSetCookie()
    return new Map(
      lines.map((line) => {
        const pair = line.split(';')[0]!
        const eq = pair.indexOf('=')
        return [pair.slice(0, eq).trim(), pair.slice(eq + 1).trim()] as [string, string]
      }),
    )
  }

  async function sessionFrom(res: Response): Promise<CookieSession> {
    expect(res.status, await res.clone().text()).toBe(200)
    const body = (await res.json()) as Record<string, unknown>
    expect(body).toMatchObject({ token_type: 'Cookie', csrf_token: expect.any(String) })
    expect(body).not.toHaveProperty('access_token')
    expect(body).not.toHaveProperty('refresh_token')
    const cookies = cookiesOf(res)
    expect([...cookies.keys()].sort()).toEqual([ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE].sort())
    return { cookies, csrf: body.csrf_token as string }
  }

  const cookieHeader = (session: CookieSession): string =>
    [...session.cookies].map(([name, value]) => `${name}=${value}`).join('; ')

  const byCookie = (session: CookieSession, csrf = true): Record<string, string> => ({
    cookie: cookieHeader(session),
    ...(csrf ? { 'x-csrf-token': session.csrf } : {}),
  })

  it('a caller who came by cookie gets new cookies for the same session, never tokens; the CSRF header is required', async () => {
    const user = await registerUser()
    const loggedIn = await sessionFrom(
      await api('POST', '/auth/token?mode=cookie', { username: user.username, password: user.password }),
    )
    advance(PAST_REAUTH_MAX_AGE_MS)
    const stale = await sessionFrom(
      await api('POST', '/auth/token/refresh?mode=cookie', undefined, undefined, byCookie(loggedIn)),
    )
    await expectProblem(
      await api('POST', '/auth/mfa/totp', undefined, undefined, byCookie(stale)),
      403,
      'reauthentication_required',
    )

    await expectProblem(
      await api('POST', '/auth/reauthenticate', { password: user.password }, undefined, byCookie(stale, false)),
      403,
      'forbidden',
    )
    const fresh = await sessionFrom(
      await api('POST', '/auth/reauthenticate', { password: user.password }, undefined, byCookie(stale)),
    )
    const access = claimsOf(fresh.cookies.get(ACCESS_COOKIE)!)
    expect(access.sid).toBe(claimsOf(stale.cookies.get(ACCESS_COOKIE)!).sid)
    expect(access.auth_time).toBe(nowSeconds())
    expect(claimsOf(fresh.cookies.get(REFRESH_COOKIE)!).auth_time).toBe(nowSeconds())

    const enrolled = await api('POST', '/auth/mfa/totp', undefined, undefined, byCookie(fresh))
    expect(enrolled.status, await enrolled.clone().text()).toBe(200)
  })
})

describe('accounts without a password', () => {
  it('step up with their provider and delete themselves with an empty body', async () => {
    const { pair, sub, id } = await providerAccount()
    const stale = await ageSession(pair)
    await expectProblem(await api('DELETE', '/users/me', {}, stale.access_token), 403, 'reauthentication_required')
    // No password matches an account created by a provider.
    await expectProblem(
      await reauthenticate({ password: 'correct horse battery staple' }, stale.access_token),
      401,
      'invalid_credentials',
    )
    const res = await reauthenticate(withGoogle(await googleToken({ sub })), stale.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    const fresh = (await res.json()) as TokenPair

    expect((await api('DELETE', '/users/me', {}, fresh.access_token)).status).toBe(204)
    expect((await api('GET', '/users/me', undefined, fresh.access_token)).status).toBe(401)
    // The identity went with the account: signing in with it again makes another one.
    const again = await api('POST', '/auth/oidc/google', withGoogle(await googleToken({ sub })))
    expect(again.status).toBe(200)
    expect(Number(claimsOf(((await again.json()) as TokenPair).access_token).sub)).not.toBe(id)
  })

  it('an account with a password must still give it to delete itself: 400 naming password, 401 when wrong', async () => {
    const { user, tokens } = await registerAndLogin()
    const missing = await expectProblem(
      await api('DELETE', '/users/me', {}, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(missing.errors?.map((error) => error.path)).toEqual(['password'])
    await expectProblem(
      await api('DELETE', '/users/me', { password: 'not the password at all' }, tokens.access_token),
      401,
      'invalid_credentials',
    )
    expect((await login(user)).access_token).toEqual(expect.any(String))
  })
})

describe('security notices', () => {
  it('linking and then unlinking a provider each email the account’s address, naming the provider', async () => {
    const { user, tokens } = await registerAndLogin()
    expect((await linkGoogle(await googleToken(), tokens.access_token)).status).toBe(204)
    const linked = (await outboxMessagesTo(user.email)).filter((message) => message.subject === SUBJECTS.linked)
    expect(linked).toHaveLength(1)
    expect(linked[0]!.text).toContain('Signing in with google now opens your account.')

    expect((await api('DELETE', '/auth/oidc/google/link', undefined, tokens.access_token)).status).toBe(204)
    const unlinked = (await outboxMessagesTo(user.email)).filter((message) => message.subject === SUBJECTS.unlinked)
    expect(unlinked).toHaveLength(1)
    expect(unlinked[0]!.text).toContain('Signing in with google no longer opens your account.')
  })

  it('an email change tells the OLD address, naming the new one; the new address gets the verification link', async () => {
    const { user, tokens } = await registerAndLogin()
    const newEmail = `${uniqueName('moved')}@example.com`
    const res = await api('PATCH', '/users/me', { email: newEmail }, tokens.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    expect(await res.json()).toMatchObject({ email: newEmail, email_verified: false })

    const notices = (await outboxMessagesTo(user.email)).filter((message) => message.subject === SUBJECTS.emailChanged)
    expect(notices).toHaveLength(1)
    expect(notices[0]!.text).toContain(`changed to ${newEmail}.`)
    expect(await subjectsTo(newEmail)).not.toContain(SUBJECTS.emailChanged)

    const verified = await api('POST', '/auth/email/verify', { token: await tokenFromEmail(newEmail, 'verify-email') })
    expect(verified.status).toBe(204)
    expect((await me(tokens.access_token)).email_verified).toBe(true)
  })

  it('new recovery codes email the owner', async () => {
    const { user, tokens } = await registerAndLogin()
    const { secret } = await enrolTotp(tokens)
    expect(await subjectsTo(user.email)).not.toContain(SUBJECTS.newRecoveryCodes)
    const res = await api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(secret) }, tokens.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    expect((await subjectsTo(user.email)).filter((subject) => subject === SUBJECTS.newRecoveryCodes)).toHaveLength(1)
  })

  it('a change refused for an old sign-in (403) queues no notice and changes nothing', async () => {
    const { user, tokens } = await registerAndLogin()
    const { secret } = await enrolTotp(tokens)
    const stale = await ageSession(tokens)
    const newEmail = `${uniqueName('moved')}@example.com`
    const before = await outboxMessagesTo(user.email)
    const codesBefore = await recoveryCodeHashes(user.id)

    const refused = [
      await linkGoogle(await googleToken(), stale.access_token),
      await api('PATCH', '/users/me', { email: newEmail }, stale.access_token),
      await api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(secret) }, stale.access_token),
    ]
    for (const res of refused) await expectProblem(res, 403, 'reauthentication_required')

    expect(await outboxMessagesTo(user.email)).toEqual(before)
    expect(await outboxMessagesTo(newEmail)).toEqual([])
    expect(await recoveryCodeHashes(user.id)).toEqual(codesBefore)
    expect(await me(stale.access_token)).toMatchObject({ email: user.email, providers: [] })
  })
})
