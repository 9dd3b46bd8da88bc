import { env } from 'cloudflare:workers'
import { Secret, TOTP } from 'otpauth'
import { describe, expect, it } from 'vitest'
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

// Two-factor sign-in with TOTP: enrolment, the two-step login (JSON, form, Basic, cookie mode),
// drift, replay, the wrong-code limit, recovery codes, turning it off, and MFA tokens that are
// good for nothing else. The RFC 6238 vectors are in src/lib/totp.test.ts.

/** The code an authenticator app shows `offsetSteps` steps from now (the 30 s steps of RFC 6238). */
function codeAt(secret: string, offsetSteps = 0): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({
    timestamp: Date.now() + offsetSteps * 30_000,
  })
}

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
  const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: codeAt(secret, -1) }, tokens.access_token)
  expect(confirmed.status).toBe(200)
  const { recovery_codes: recoveryCodes } = (await confirmed.json()) as { recovery_codes: string[] }
  return { user, tokens, secret, recoveryCodes }
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
        { code: '000000' === codeAt(secret) ? '111111' : '000000' },
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
    const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: codeAt(secret) }, tokens.access_token)
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

    const verified = await verifyMfa({ mfa_token: problem.mfa_token, code: codeAt(secret) })
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
      new URLSearchParams({ mfa_token: token, code: codeAt(secret) }).toString(),
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
    const verified = await verifyMfa({ mfa_token: token, code: codeAt(secret) }, '?mode=cookie')
    expect(verified.status).toBe(200)
    const body = (await verified.json()) as Record<string, unknown>
    expect(body).toMatchObject({ token_type: 'Cookie' })
    expect(body).not.toHaveProperty('access_token')
    const setCookie = verified.headers.get('set-cookie') ?? ''
    for (const name of ['__Host-edgepress-access', '__Host-edgepress-csrf', '__Host-edgepress-refresh'])
      expect(setCookie).toContain(`${name}=`)
    await expectProblem(
      await verifyMfa({ mfa_token: token, code: codeAt(secret, 1) }, '?mode=cookie', {
        origin: 'https://evil.example',
      }),
      403,
      'forbidden',
    )
  })

  it('accepts ±1 step of drift, refuses ±2, and refuses a code already used in its step', async () => {
    const { user, secret } = await enrolled()
    const token = await mfaTokenFor(user)
    await expectProblem(await verifyMfa({ mfa_token: token, code: codeAt(secret, 2) }), 401, 'invalid_credentials')
    await expectProblem(await verifyMfa({ mfa_token: token, code: codeAt(secret, -2) }), 401, 'invalid_credentials')
    expect((await verifyMfa({ mfa_token: token, code: codeAt(secret) })).status).toBe(200)
    await expectProblem(await verifyMfa({ mfa_token: token, code: codeAt(secret) }), 401, 'invalid_credentials')
    expect((await verifyMfa({ mfa_token: token, code: codeAt(secret, 1) })).status).toBe(200)
  })

  it('counts wrong codes per account: after 5, every code is refused with 429 and Retry-After', async () => {
    const { user, secret } = await enrolled()
    const token = await mfaTokenFor(user)
    const wrong = codeAt(secret) === '000000' ? '111111' : '000000'
    for (let i = 0; i < 5; i += 1)
      await expectProblem(await verifyMfa({ mfa_token: token, code: wrong }), 401, 'invalid_credentials')
    const locked = await verifyMfa({ mfa_token: token, code: codeAt(secret) })
    await expectProblem(locked, 429, 'rate_limited')
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(Number(locked.headers.get('retry-after'))).toBeLessThanOrEqual(900)
  })

  it('a recovery code logs in once, and the owner is told by email', async () => {
    const { user, recoveryCodes } = await enrolled()
    const token = await mfaTokenFor(user)
    const code = recoveryCodes[0]!
    expect((await verifyMfa({ mfa_token: token, recovery_code: code.toUpperCase() })).status).toBe(200)
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
    await expectProblem(await verifyMfa({ mfa_token: tokens.access_token, code: codeAt(secret) }), 401, 'token_invalid')
    await expectProblem(
      await verifyMfa({ mfa_token: tokens.refresh_token, code: codeAt(secret) }),
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
      await verifyMfa({ mfa_token: await mfaTokenFor(user), code: codeAt(secret) })
    ).json()) as TokenPair
    await expectProblem(
      await api(
        'DELETE',
        '/auth/mfa/totp',
        { password: 'wrong password', code: codeAt(secret, 1) },
        tokens.access_token,
      ),
      401,
      'invalid_credentials',
    )
    const off = await api(
      'DELETE',
      '/auth/mfa/totp',
      { password: user.password, code: codeAt(secret, 1) },
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
    const res = await api('POST', '/auth/mfa/recovery-codes', { code: codeAt(secret) }, tokens.access_token)
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
