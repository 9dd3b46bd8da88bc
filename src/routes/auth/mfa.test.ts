import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { stopTheClockMidStep, totpCodeAt } from '../../../test/stopped-clock'
import {
  api,
  apiWithEnv,
  decodeJwt,
  expectProblem,
  login,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
} from '../../../test/helpers'
import type { RegisteredUser, TokenPair } from '../../../test/helpers'
import { TEST_PROVIDERS, signIdToken } from '../../../test/oidc-provider'

// Two-factor sign-in with TOTP: enrolment, the two-step login (JSON, form, Basic, cookie mode),
// drift, replay, the wrong-code limit, recovery codes, turning it off, and MFA tokens that are
// good for nothing else. The RFC 6238 vectors are in src/lib/totp.test.ts.

// Each test stops the clock in the middle of a 30 s step and moves it on by hand
// (test/stopped-clock.ts).
const { advance } = stopTheClockMidStep()

interface Enrolled {
  user: RegisteredUser
  tokens: TokenPair
  secret: string
  recoveryCodes: string[]
}

/** A user with the factor on; the confirmation used the previous step's code (drift −1). */
async function enrolled(): Promise<Enrolled> {
  const { user, tokens } = await registerAndLogin()
  const started = await api('POST', '/auth/mfa/totp', undefined, tokens.access_token)
  expect(started.status).toBe(200)
  const { secret } = (await started.json()) as { secret: string }
  const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret, -1) }, tokens.access_token)
  expect(confirmed.status).toBe(200)
  const { recovery_codes: recoveryCodes } = (await confirmed.json()) as { recovery_codes: string[] }
  return { user, tokens, secret, recoveryCodes }
}

/** A code no authenticator shows now. */
function wrongCode(secret: string): string {
  const near = [-1, 0, 1].map((offset) => totpCodeAt(secret, offset))
  return ['000000', '111111', '222222', '333333'].find((code) => !near.includes(code))!
}

async function mfaTokenFor(user: RegisteredUser): Promise<string> {
  const res = await api('POST', '/auth/token', { username: user.username, password: user.password })
  const problem = (await expectProblem(res, 401, 'mfa_required')) as unknown as { mfa_token: string }
  return problem.mfa_token
}

function verifyMfa(body: Record<string, string>, query = '', headers: Record<string, string> = {}): Promise<Response> {
  return api('POST', `/auth/mfa/verify${query}`, body, undefined, headers)
}

async function me(token: string): Promise<{ mfa_enabled: boolean }> {
  const res = await api('GET', '/users/me', undefined, token)
  expect(res.status).toBe(200)
  return (await res.json()) as { mfa_enabled: boolean }
}

describe('enrolment', () => {
  it('gives a secret and an otpauth URI; the factor is on only after a valid code, with ten recovery codes', async () => {
    const { user, tokens } = await registerAndLogin()
    const started = await api('POST', '/auth/mfa/totp', undefined, tokens.access_token)
    expect(started.status).toBe(200)
    expect(started.headers.get('cache-control')).toBe('no-store')
    const { secret, otpauth_uri: uri } = (await started.json()) as { secret: string; otpauth_uri: string }
    expect(secret).toMatch(/^[A-Z2-7]{32}$/)
    expect(uri).toMatch(
      new RegExp(
        `^otpauth://totp/edgepress:${user.username}\\?secret=${secret}&issuer=edgepress&algorithm=SHA1&digits=6&period=30$`,
      ),
    )
    expect((await me(tokens.access_token)).mfa_enabled).toBe(false)
    // Until confirmed, the password alone still logs in.
    expect((await api('POST', '/auth/token', { username: user.username, password: user.password })).status).toBe(200)

    await expectProblem(
      await api(
        'POST',
        '/auth/mfa/totp/confirm',
        { code: '000000' === totpCodeAt(secret) ? '111111' : '000000' },
        tokens.access_token,
      ),
      401,
      'invalid_credentials',
    )
    await expectProblem(
      await api('POST', '/auth/mfa/totp/confirm', { code: '12345' }, tokens.access_token),
      400,
      'validation_failed',
    )
    const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret) }, tokens.access_token)
    expect(confirmed.status).toBe(200)
    const { recovery_codes: codes } = (await confirmed.json()) as { recovery_codes: string[] }
    expect(codes).toHaveLength(10)
    expect(new Set(codes).size).toBe(10)
    expect((await me(tokens.access_token)).mfa_enabled).toBe(true)
    expect((await outboxMessagesTo(user.email)).some((m) => /Two-factor sign-in is on/.test(m.subject))).toBe(true)

    // Stored sealed: neither the secret nor a recovery code appears in D1.
    const factor = await env.DB.prepare('SELECT secret_sealed FROM mfa_factors WHERE user_id = ?')
      .bind(user.id)
      .first<{ secret_sealed: string }>()
    expect(factor!.secret_sealed).toMatch(/^v1\./)
    expect(factor!.secret_sealed).not.toContain(secret)
    const hashes = await env.DB.prepare('SELECT code_hash FROM mfa_recovery_codes WHERE user_id = ?')
      .bind(user.id)
      .all<{ code_hash: string }>()
    expect(hashes.results).toHaveLength(10)
    for (const { code_hash: hash } of hashes.results) expect(codes).not.toContain(hash)

    // A confirmed factor is not replaced by a new enrolment.
    await expectProblem(await api('POST', '/auth/mfa/totp', undefined, tokens.access_token), 409, 'conflict')
  })

  it('refuses to enrol without MFA_ENCRYPTION_KEY, naming it', async () => {
    const { tokens } = await registerAndLogin()
    const res = await apiWithEnv(
      { ...env, MFA_ENCRYPTION_KEY: undefined },
      'POST',
      '/auth/mfa/totp',
      undefined,
      tokens.access_token,
    )
    const problem = await expectProblem(res, 500, 'internal_error')
    expect(problem.detail).toContain('MFA_ENCRYPTION_KEY')
  })
})

describe('login with the factor on', () => {
  it('the password step answers 401 mfa_required with an MFA token; the code completes the login', async () => {
    const { user, secret } = await enrolled()
    const res = await api('POST', '/auth/token', { username: user.username, password: user.password })
    expect(res.headers.get('set-cookie')).toBeNull()
    const problem = (await expectProblem(res, 401, 'mfa_required')) as unknown as { mfa_token: string }
    const { header, payload } = decodeJwt(problem.mfa_token)
    expect(header.typ).toBe('JWT')
    expect(payload).toMatchObject({ token_type: 'mfa', sub: String(user.id) })
    expect(payload.exp! - payload.iat!).toBe(300)

    const verified = await verifyMfa({ mfa_token: problem.mfa_token, code: totpCodeAt(secret) })
    expect(verified.status).toBe(200)
    expect(verified.headers.get('cache-control')).toBe('no-store')
    const pair = (await verified.json()) as TokenPair
    expect((await me(pair.access_token)).mfa_enabled).toBe(true)
  })

  it('works for a form body, HTTP Basic and /auth/login', async () => {
    const { user, secret } = await enrolled()
    const form = await api(
      'POST',
      '/auth/token',
      new URLSearchParams({ username: user.username, password: user.password }).toString(),
      undefined,
      {
        'content-type': 'application/x-www-form-urlencoded',
      },
    )
    await expectProblem(form, 401, 'mfa_required')
    const basic = await api('POST', '/auth/login', undefined, undefined, {
      authorization: `Basic ${btoa(`${user.username}:${user.password}`)}`,
    })
    const { mfa_token: token } = (await expectProblem(basic, 401, 'mfa_required')) as unknown as { mfa_token: string }
    const verified = await api(
      'POST',
      '/auth/mfa/verify',
      new URLSearchParams({ mfa_token: token, code: totpCodeAt(secret) }).toString(),
      undefined,
      {
        'content-type': 'application/x-www-form-urlencoded',
      },
    )
    expect(verified.status).toBe(200)
  })

  it('works in cookie mode: no cookie after the password, the session cookies after the code', async () => {
    const { user, secret } = await enrolled()
    const first = await api('POST', '/auth/token?mode=cookie', { username: user.username, password: user.password })
    expect(first.headers.get('set-cookie')).toBeNull()
    const { mfa_token: token } = (await expectProblem(first, 401, 'mfa_required')) as unknown as { mfa_token: string }
    const verified = await verifyMfa({ mfa_token: token, code: totpCodeAt(secret) }, '?mode=cookie')
    expect(verified.status).toBe(200)
    const body = (await verified.json()) as Record<string, unknown>
    expect(body).toMatchObject({ token_type: 'Cookie' })
    expect(body).not.toHaveProperty('access_token')
    const setCookie = verified.headers.get('set-cookie') ?? ''
    for (const name of ['__Host-edgepress-access', '__Host-edgepress-csrf', '__Host-edgepress-refresh'])
      expect(setCookie).toContain(`${name}=`)
    await expectProblem(
      await verifyMfa({ mfa_token: token, code: totpCodeAt(secret, 1) }, '?mode=cookie', {
        origin: 'https://evil.example',
      }),
      403,
      'forbidden',
    )
  })

  it('accepts ±1 step of drift, refuses ±2, and refuses a code already used in its step', async () => {
    const { user, secret } = await enrolled()
    const token = await mfaTokenFor(user)
    await expectProblem(await verifyMfa({ mfa_token: token, code: totpCodeAt(secret, 2) }), 401, 'invalid_credentials')
    await expectProblem(await verifyMfa({ mfa_token: token, code: totpCodeAt(secret, -2) }), 401, 'invalid_credentials')
    expect((await verifyMfa({ mfa_token: token, code: totpCodeAt(secret) })).status).toBe(200)
    // A new login, for the MFA token is spent: the same code again is a replay.
    const again = await mfaTokenFor(user)
    await expectProblem(await verifyMfa({ mfa_token: again, code: totpCodeAt(secret) }), 401, 'invalid_credentials')
    expect((await verifyMfa({ mfa_token: again, code: totpCodeAt(secret, 1) })).status).toBe(200)
  })

  it('counts wrong codes per account: after 5, every code is refused with 429 and Retry-After', async () => {
    const { user, secret } = await enrolled()
    const token = await mfaTokenFor(user)
    const wrong = wrongCode(secret)
    for (let i = 0; i < 5; i += 1)
      await expectProblem(await verifyMfa({ mfa_token: token, code: wrong }), 401, 'invalid_credentials')
    const locked = await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) })
    await expectProblem(locked, 429, 'rate_limited')
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(Number(locked.headers.get('retry-after'))).toBeLessThanOrEqual(900)
  })

  it('holds under a burst: 20 wrong codes at once with one MFA token get at most 5 answers of 401, the rest 429; then even the right code waits out the window', async () => {
    const { user, secret } = await enrolled()
    const token = await mfaTokenFor(user)
    const wrong = wrongCode(secret)
    const answers = await Promise.all(Array.from({ length: 20 }, () => verifyMfa({ mfa_token: token, code: wrong })))
    const statuses = answers.map((res) => res.status)
    expect(statuses.filter((status) => status === 401).length).toBeLessThanOrEqual(5)
    expect(statuses.filter((status) => status !== 401)).toEqual(
      Array(statuses.length - statuses.filter((s) => s === 401).length).fill(429),
    )
    for (const res of answers.filter((res) => res.status === 429)) {
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0)
    }

    await expectProblem(
      await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) }),
      429,
      'rate_limited',
    )
    advance(14 * 60_000)
    await expectProblem(
      await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) }),
      429,
      'rate_limited',
    )
    advance(60_000)
    expect((await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) })).status).toBe(200)
  })

  it('an MFA token signs in once: after its sign-in it is refused, whatever the code', async () => {
    const { user, secret } = await enrolled()
    const token = await mfaTokenFor(user)
    expect((await verifyMfa({ mfa_token: token, code: totpCodeAt(secret) })).status).toBe(200)
    await expectProblem(await verifyMfa({ mfa_token: token, code: totpCodeAt(secret, 1) }), 401, 'token_invalid')
  })

  it('an MFA token minted before a logout-all, a password change or reset is refused', async () => {
    const { user, tokens, secret } = await enrolled()
    const before = await mfaTokenFor(user)
    advance(1_000)
    expect((await api('POST', '/auth/logout-all', undefined, tokens.access_token)).status).toBe(204)
    await expectProblem(await verifyMfa({ mfa_token: before, code: totpCodeAt(secret) }), 401, 'token_invalid')
    // A login after it works as usual.
    advance(1_000)
    expect((await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) })).status).toBe(200)
  })

  it('is limited per account as well as per IP: the account limit answers 429 before any code is tried', async () => {
    const { user } = await enrolled()
    const token = await mfaTokenFor(user)
    const limited = { ...env, CREDENTIALS_BY_ACCOUNT: env.SMALL_CREDENTIALS_BY_ACCOUNT }
    const statuses: number[] = []
    for (let i = 0; i < 4; i += 1) {
      const res = await apiWithEnv(limited, 'POST', '/auth/mfa/verify', { mfa_token: token, code: '000000' })
      statuses.push(res.status)
    }
    expect(statuses.at(-1)).toBe(429)
  })

  it('a recovery code logs in once, and the owner is told by email', async () => {
    const { user, recoveryCodes } = await enrolled()
    const code = recoveryCodes[0]!
    expect((await verifyMfa({ mfa_token: await mfaTokenFor(user), recovery_code: code.toUpperCase() })).status).toBe(
      200,
    )
    const token = await mfaTokenFor(user)
    await expectProblem(await verifyMfa({ mfa_token: token, recovery_code: code }), 401, 'invalid_credentials')
    await expectProblem(await verifyMfa({ mfa_token: token, recovery_code: 'not-a-code' }), 401, 'invalid_credentials')
    expect((await outboxMessagesTo(user.email)).some((m) => /recovery code was used/.test(m.subject))).toBe(true)
    await expectProblem(await verifyMfa({ mfa_token: token }), 400, 'validation_failed')
  })
})

describe('an MFA token is good for the second step only', () => {
  it('is refused as an access token, as a refresh token and by /auth/token/verify', async () => {
    const { user } = await enrolled()
    const token = await mfaTokenFor(user)
    await expectProblem(await api('GET', '/users/me', undefined, token), 401, 'token_invalid')
    await expectProblem(await api('POST', '/auth/token/refresh', { refresh_token: token }), 401, 'token_invalid')
    expect((await api('POST', '/auth/token/verify', { token })).status).toBe(401)
  })

  it('and an access or refresh token is refused as an MFA token', async () => {
    const { user, secret } = await enrolled()
    const { tokens } = await registerAndLogin()
    await expectProblem(
      await verifyMfa({ mfa_token: tokens.access_token, code: totpCodeAt(secret) }),
      401,
      'token_invalid',
    )
    await expectProblem(
      await verifyMfa({ mfa_token: tokens.refresh_token, code: totpCodeAt(secret) }),
      401,
      'token_invalid',
    )
    expect(user.id).toBeGreaterThan(0)
  })
})

describe('turning it off and new recovery codes', () => {
  it('needs the password and a code, ends every other session, and tells the owner', async () => {
    const { user, tokens, secret } = await enrolled()
    const other = (await (
      await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) })
    ).json()) as TokenPair
    await expectProblem(
      await api(
        'DELETE',
        '/auth/mfa/totp',
        { password: 'wrong password', code: totpCodeAt(secret, 1) },
        tokens.access_token,
      ),
      401,
      'invalid_credentials',
    )
    const off = await api(
      'DELETE',
      '/auth/mfa/totp',
      { password: user.password, code: totpCodeAt(secret, 1) },
      tokens.access_token,
    )
    expect(off.status).toBe(204)
    expect((await me(tokens.access_token)).mfa_enabled).toBe(false)
    await expectProblem(await api('GET', '/users/me', undefined, other.access_token), 401, 'token_revoked')
    expect((await outboxMessagesTo(user.email)).some((m) => /Two-factor sign-in is off/.test(m.subject))).toBe(true)
    // The password alone logs in again.
    expect((await login(user)).access_token).toBeTruthy()
    await expectProblem(
      await api('DELETE', '/auth/mfa/totp', { password: user.password, code: '123456' }, tokens.access_token),
      409,
      'conflict',
    )
  })

  it('replaces the recovery codes with a current code: the old ones stop working', async () => {
    const { user, tokens, secret, recoveryCodes } = await enrolled()
    const res = await api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(secret) }, tokens.access_token)
    expect(res.status).toBe(200)
    const { recovery_codes: fresh } = (await res.json()) as { recovery_codes: string[] }
    expect(fresh).toHaveLength(10)
    const token = await mfaTokenFor(user)
    await expectProblem(
      await verifyMfa({ mfa_token: token, recovery_code: recoveryCodes[0]! }),
      401,
      'invalid_credentials',
    )
    expect((await verifyMfa({ mfa_token: token, recovery_code: fresh[0]! })).status).toBe(200)
  })

  it('an admin sees only the flag, never the factor', async () => {
    const { user } = await enrolled()
    const target = await registerUser()
    expect(target.id).not.toBe(user.id)
    const view = await api('GET', `/users/${user.id}`)
    expect(Object.keys((await view.json()) as object).sort()).toEqual(['created_at', 'id', 'username'])
  })
})

// ---------------------------------------------------------------------------------------------
// Regression tests for the second-factor hardening: turning the factor on ends the other sessions,
// turning it off takes a recovery code, and no recovery code is spent by a worker that cannot mail.

/** A worker deployed without an email provider: console transport, an https:// non-test address. */
const noMail = { ...env, MAIL_TRANSPORT: undefined, PUBLIC_BASE_URL: 'https://edgepress.example.com' }

async function refreshWith(pair: TokenPair): Promise<Response> {
  return api('POST', '/auth/token/refresh', { refresh_token: pair.refresh_token })
}

async function revokedAt(pair: TokenPair): Promise<number | null> {
  const row = await env.DB.prepare('SELECT revoked_at FROM sessions WHERE sid = ?')
    .bind(decodeJwt(pair.access_token).payload.sid)
    .first<{ revoked_at: number | null }>()
  return row!.revoked_at
}

async function unusedRecoveryCodes(userId: number): Promise<number> {
  const row = await env.DB.prepare('SELECT count(*) AS n FROM mfa_recovery_codes WHERE user_id = ? AND used_at IS NULL')
    .bind(userId)
    .first<{ n: number }>()
  return row!.n
}

function turnOff(body: Record<string, string>, accessToken: string): Promise<Response> {
  return api('DELETE', '/auth/mfa/totp', body, accessToken)
}

describe('turning it on ends every other session', () => {
  it("revokes the access and refresh tokens of the user's other sessions and keeps the caller's", async () => {
    const { user, tokens } = await registerAndLogin()
    const others = [await login(user), await login(user)]
    const started = await api('POST', '/auth/mfa/totp', undefined, tokens.access_token)
    const { secret } = (await started.json()) as { secret: string }
    // An unconfirmed enrolment ends nothing.
    for (const other of others) expect((await api('GET', '/users/me', undefined, other.access_token)).status).toBe(200)

    const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret) }, tokens.access_token)
    expect(confirmed.status).toBe(200)
    for (const other of others) {
      await expectProblem(await api('GET', '/users/me', undefined, other.access_token), 401, 'token_revoked')
      await expectProblem(await refreshWith(other), 401, 'token_revoked')
      expect(await revokedAt(other)).not.toBeNull()
    }
    // The caller goes on: its access token, and its refresh token.
    expect((await me(tokens.access_token)).mfa_enabled).toBe(true)
    expect(await revokedAt(tokens)).toBeNull()
    expect((await refreshWith(tokens)).status).toBe(200)
  })

  it("leaves another user's sessions alone", async () => {
    const { tokens: bystander } = await registerAndLogin()
    await enrolled()
    expect((await api('GET', '/users/me', undefined, bystander.access_token)).status).toBe(200)
    expect((await refreshWith(bystander)).status).toBe(200)
  })
})

describe('turning it off with a recovery code', () => {
  it('needs the password and one recovery code; ends the other sessions and removes every code', async () => {
    const { user, tokens, secret, recoveryCodes } = await enrolled()
    const other = (await (
      await verifyMfa({ mfa_token: await mfaTokenFor(user), code: totpCodeAt(secret) })
    ).json()) as TokenPair
    const code = recoveryCodes[0]!

    // A wrong password is refused before the code is looked at: the code is still unspent.
    await expectProblem(
      await turnOff({ password: 'wrong password', recovery_code: code }, tokens.access_token),
      401,
      'invalid_credentials',
    )
    expect(await unusedRecoveryCodes(user.id)).toBe(10)
    const missing = await expectProblem(
      await turnOff({ recovery_code: code }, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(missing.errors?.map((error) => error.path)).toEqual(['password'])
    await expectProblem(
      await turnOff({ password: user.password, recovery_code: 'zzzz-zzzz-zzzz-zzzz' }, tokens.access_token),
      401,
      'invalid_credentials',
    )
    await expectProblem(
      await turnOff({ password: user.password, recovery_code: code, code: totpCodeAt(secret) }, tokens.access_token),
      400,
      'validation_failed',
    )
    expect((await me(tokens.access_token)).mfa_enabled).toBe(true)

    // Any case and dashes as the user types them.
    expect(
      (await turnOff({ password: user.password, recovery_code: code.toUpperCase() }, tokens.access_token)).status,
    ).toBe(204)
    expect((await me(tokens.access_token)).mfa_enabled).toBe(false)
    await expectProblem(await api('GET', '/users/me', undefined, other.access_token), 401, 'token_revoked')
    await expectProblem(await refreshWith(other), 401, 'token_revoked')
    expect((await refreshWith(tokens)).status).toBe(200)
    const remaining = await env.DB.prepare('SELECT count(*) AS n FROM mfa_recovery_codes WHERE user_id = ?')
      .bind(user.id)
      .first<{ n: number }>()
    expect(remaining!.n).toBe(0)
    expect((await outboxMessagesTo(user.email)).some((m) => /Two-factor sign-in is off/.test(m.subject))).toBe(true)
    expect((await login(user)).access_token).toBeTruthy()
  })

  it('refuses a recovery code already used to sign in; an unused one works', async () => {
    const { user, tokens, recoveryCodes } = await enrolled()
    const [spent, unused] = [recoveryCodes[0]!, recoveryCodes[1]!]
    expect((await verifyMfa({ mfa_token: await mfaTokenFor(user), recovery_code: spent })).status).toBe(200)

    await expectProblem(
      await turnOff({ password: user.password, recovery_code: spent }, tokens.access_token),
      401,
      'invalid_credentials',
    )
    expect((await me(tokens.access_token)).mfa_enabled).toBe(true)
    expect((await turnOff({ password: user.password, recovery_code: unused }, tokens.access_token)).status).toBe(204)
    expect((await me(tokens.access_token)).mfa_enabled).toBe(false)
  })

  it('an account without a password (created by a provider) gives the recovery code alone', async () => {
    const google = await signIdToken({
      kid: 'google-1',
      iss: 'https://accounts.google.com',
      aud: TEST_PROVIDERS.google.audiences[0],
      sub: String(100_000_000 + Math.floor(Math.random() * 1e9)),
      email: `${crypto.randomUUID().slice(0, 12)}@gmail.com`,
      email_verified: true,
      nonce: 'n',
    })
    const signedIn = await api('POST', '/auth/oidc/google', { id_token: google, nonce: 'n' })
    expect(signedIn.status).toBe(200)
    const pair = (await signedIn.json()) as TokenPair
    const started = await api('POST', '/auth/mfa/totp', undefined, pair.access_token)
    const { secret } = (await started.json()) as { secret: string }
    const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret) }, pair.access_token)
    const { recovery_codes: codes } = (await confirmed.json()) as { recovery_codes: string[] }

    expect((await turnOff({ recovery_code: codes[0]! }, pair.access_token)).status).toBe(204)
    expect((await me(pair.access_token)).mfa_enabled).toBe(false)
  })
})

describe('a worker that cannot send mail spends no recovery code', () => {
  it('/auth/mfa/verify answers 500 naming MAIL_TRANSPORT before the code is spent; the code then works', async () => {
    const { user, recoveryCodes } = await enrolled()
    const code = recoveryCodes[0]!
    const token = await mfaTokenFor(user)
    const mailsBefore = (await outboxMessagesTo(user.email)).length

    const refused = await apiWithEnv(noMail, 'POST', '/auth/mfa/verify', { mfa_token: token, recovery_code: code })
    const problem = await expectProblem(refused, 500, 'internal_error')
    expect(problem.detail).toContain('MAIL_TRANSPORT')
    expect(await unusedRecoveryCodes(user.id)).toBe(10)
    expect(await outboxMessagesTo(user.email)).toHaveLength(mailsBefore)

    // Once mail works, the same code (and even the same MFA token) signs in.
    const verified = await verifyMfa({ mfa_token: token, recovery_code: code })
    expect(verified.status).toBe(200)
    expect(await unusedRecoveryCodes(user.id)).toBe(9)
    expect((await outboxMessagesTo(user.email)).some((m) => /recovery code was used/.test(m.subject))).toBe(true)
  })

  it('so do turning the factor off and the step-up with a recovery code', async () => {
    const { user, tokens, recoveryCodes } = await enrolled()
    const code = recoveryCodes[0]!
    const off = await apiWithEnv(
      noMail,
      'DELETE',
      '/auth/mfa/totp',
      { password: user.password, recovery_code: code },
      tokens.access_token,
    )
    expect((await expectProblem(off, 500, 'internal_error')).detail).toContain('MAIL_TRANSPORT')
    const stepUp = await apiWithEnv(noMail, 'POST', '/auth/reauthenticate', { code }, tokens.access_token)
    expect((await expectProblem(stepUp, 500, 'internal_error')).detail).toContain('MAIL_TRANSPORT')
    expect(await unusedRecoveryCodes(user.id)).toBe(10)
    expect((await me(tokens.access_token)).mfa_enabled).toBe(true)

    expect((await api('POST', '/auth/reauthenticate', { code }, tokens.access_token)).status).toBe(200)
    await expectProblem(
      await turnOff({ password: user.password, recovery_code: code }, tokens.access_token),
      401,
      'invalid_credentials',
    )
    expect(
      (await turnOff({ password: user.password, recovery_code: recoveryCodes[1]! }, tokens.access_token)).status,
    ).toBe(204)
  })
})
