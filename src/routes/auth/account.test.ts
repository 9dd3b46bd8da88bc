import { env } from 'cloudflare:workers'
import { describe, it, vi } from 'vitest'
import {
  api,
  decodeJwt,
  expectProblem,
  login,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  tokenFromEmail,
  uniqueName,
} from '../../../test/helpers'
import type { RegisteredUser, TokenPair } from '../../../test/helpers'

// wrangler.toml [vars]: the base of every link in an email (docs/API.md § Email).
const PUBLIC_BASE_URL = 'http://localhost:8787'
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
const NEW_PASSWORD = 'a brand new passphrase'
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const PRIVATE_VIEW_KEYS = [
  'created_at',
  'email',
  'email_verified',
  'id',
  'is_admin',
  'last_login_at',
  'mfa_enabled',
  'passkeys',
  'providers',
  'username',
]

interface PrivateUser {
  id: number
  username: string
  email: string
  email_verified: boolean
  is_admin: boolean
  created_at: string
  last_login_at: string | null
}

type OneTimeTokenPurpose = 'email_verification' | 'password_reset'

function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString()
}

function me(accessToken: string): Promise<Response> {
  return api('GET', '/users/me', undefined, accessToken)
}

function refresh(refreshToken: string): Promise<Response> {
  return api('POST', '/auth/token/refresh', { refresh_token: refreshToken })
}

function verifyEmail(token: string): Promise<Response> {
  return api('POST', '/auth/email/verify', { token })
}

function requestReset(email: string): Promise<Response> {
  return api('POST', '/auth/password/reset', { email })
}

function confirmReset(token: string, newPassword = NEW_PASSWORD): Promise<Response> {
  return api('POST', '/auth/password/reset/confirm', { token, new_password: newPassword })
}

function tokenLogin(username: string, password: string): Promise<Response> {
  return api('POST', '/auth/token', { username, password })
}

async function emailVerifiedOf(user: RegisteredUser): Promise<boolean> {
  const tokens = await login(user)
  const res = await me(tokens.access_token)
  if (res.status !== 200) throw new Error(`GET /users/me failed: ${res.status} ${await res.text()}`)
  return ((await res.json()) as { email_verified: boolean }).email_verified
}

/** Emails to `recipient` that carry a `<base>/<path>?token=` link. */
async function linksTo(recipient: string, path: string): Promise<string[]> {
  const pattern = new RegExp(`\\S+/${path}\\?token=\\S+`, 'g')
  return (await outboxMessagesTo(recipient)).flatMap((message) => message.text.match(pattern) ?? [])
}

async function sha256Base64Url(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)))
  return btoa(String.fromCharCode(...digest))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '')
}

/** Moves a one-time token's expiry a minute into the past, as if its lifetime had run out. */
async function expireOneTimeToken(token: string, purpose: OneTimeTokenPurpose): Promise<void> {
  const result = await env.DB.prepare('UPDATE one_time_tokens SET expires_at = ? WHERE token_hash = ? AND purpose = ?')
    .bind(Date.now() - 60_000, await sha256Base64Url(token), purpose)
    .run()
  if (result.meta.changes !== 1) throw new Error(`no ${purpose} token row to expire`)
}

function expectTokenPairShape(pair: TokenPair): void {
  if (
    typeof pair.access_token !== 'string' ||
    typeof pair.refresh_token !== 'string' ||
    pair.token_type !== 'Bearer' ||
    pair.expires_in !== 300 ||
    pair.refresh_expires_in !== 86_400
  ) {
    throw new Error(`not a token pair: ${JSON.stringify(pair)}`)
  }
}

describe('POST /api/v1/auth/register', () => {
  it('creates an account and returns its private view with a Location', async ({ expect }) => {
    const username = uniqueName()
    const password = 'correct horse battery staple'
    const before = Date.now()
    const res = await api('POST', '/auth/register', { username, email: `${username}@example.com`, password })
    expect(res.status).toBe(201)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    const text = await res.text()
    const body = JSON.parse(text) as PrivateUser
    expect(Object.keys(body).sort()).toEqual(PRIVATE_VIEW_KEYS)
    expect(body).toMatchObject({
      username,
      email: `${username}@example.com`,
      email_verified: false,
      is_admin: false,
      last_login_at: null,
    })
    expect(['number', 'string']).toContain(typeof body.id)
    expect(body.created_at).toMatch(ISO_UTC)
    expect(Date.parse(body.created_at)).toBeGreaterThanOrEqual(before - 1000)
    expect(Date.parse(body.created_at)).toBeLessThanOrEqual(Date.now() + 1000)
    expect(res.headers.get('location')).toMatch(new RegExp(`/api/v1/users/${body.id}$`))
    expect(text).not.toContain(password)
    expect(text).not.toMatch(/password|hash|pbkdf2/i)
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const username = uniqueName()
    const res = await api(
      'POST',
      '/auth/register',
      form({ username, email: `${username}@example.com`, password: 'correct horse battery staple' }),
      undefined,
      FORM,
    )
    expect(res.status).toBe(201)
    expect(await res.json()).toMatchObject({ username, email: `${username}@example.com`, email_verified: false })
  })

  it('round-trips a unicode username', async ({ expect }) => {
    const username = `zoë_名前_${crypto.randomUUID().slice(0, 8)}`.normalize('NFC')
    const user = await registerUser({ username, email: `${crypto.randomUUID()}@example.com` })
    expect(user.username).toBe(username)
    const tokens = await login(user)
    const res = await me(tokens.access_token)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username })
  })

  it('accepts passwords of exactly 8 and 128 characters', async ({ expect }) => {
    for (const password of ['a'.repeat(8), 'b'.repeat(128)]) {
      const username = uniqueName()
      const res = await api('POST', '/auth/register', { username, email: `${username}@example.com`, password })
      expect(res.status).toBe(201)
      const tokens = await login({ username, password })
      expect(tokens.token_type).toBe('Bearer')
    }
  })

  it('answers 409 username_taken for a taken username, whatever its case', async () => {
    const user = await registerUser()
    for (const username of [user.username, user.username.toUpperCase()]) {
      const res = await api('POST', '/auth/register', {
        username,
        email: `${uniqueName()}@example.com`,
        password: 'another good password',
      })
      await expectProblem(res, 409, 'username_taken')
    }
  })

  it('answers 409 email_taken for a taken email, whatever its case', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('POST', '/auth/register', {
      username: uniqueName(),
      email: user.email.toUpperCase(),
      password: 'another good password',
    })
    const problem = await expectProblem(res, 409, 'email_taken')
    expect(problem.errors).toBeUndefined()
  })

  it.for([
    ['a 7-character password', { password: 'x'.repeat(7) }, 'password'],
    ['a 129-character password', { password: 'x'.repeat(129) }, 'password'],
    ['a malformed email', { email: 'not-an-email' }, 'email'],
    ['a username with a space', { username: 'two words' }, 'username'],
    ['a username with "@"', { username: 'at@sign' }, 'username'],
  ] as const)('answers 400 validation_failed for %s', async ([, override, path], { expect }) => {
    const username = uniqueName()
    const input = { username, email: `${username}@example.com`, password: 'correct horse battery staple', ...override }
    const problem = await expectProblem(await api('POST', '/auth/register', input), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toEqual([path])
    expect(problem.errors?.[0]?.message).toEqual(expect.any(String))
    expect(JSON.stringify(problem)).not.toContain('x'.repeat(7))
  })

  it('answers 400 naming every missing field', async ({ expect }) => {
    const problem = await expectProblem(await api('POST', '/auth/register', {}), 400, 'validation_failed')
    expect(new Set(problem.errors?.map((e) => e.path))).toEqual(new Set(['username', 'email', 'password']))
  })
})

describe('POST /api/v1/auth/email/verify', () => {
  it('registration emails a <PUBLIC_BASE_URL>/verify-email?token= link to the new user', async ({ expect }) => {
    const user = await registerUser()
    const messages = await outboxMessagesTo(user.email)
    expect(messages).toHaveLength(1)
    expect(messages[0]!.recipient).toBe(user.email)
    const links = await linksTo(user.email, 'verify-email')
    expect(links).toHaveLength(1)
    expect(links[0]).toMatch(new RegExp(`^${PUBLIC_BASE_URL}/verify-email\\?token=[A-Za-z0-9_-]{20,}$`))
  })

  it('verifies the email with the emailed token (204) and then refuses it (single use)', async ({ expect }) => {
    const user = await registerUser()
    expect(await emailVerifiedOf(user)).toBe(false)
    const token = await tokenFromEmail(user.email, 'verify-email')

    const res = await verifyEmail(token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
    expect(await emailVerifiedOf(user)).toBe(true)

    await expectProblem(await verifyEmail(token), 400, 'token_invalid')
  })

  it('answers 400 token_invalid to a garbage token', async () => {
    await expectProblem(await verifyEmail('not-a-real-token'), 400, 'token_invalid')
  })

  it('answers 400 token_invalid to a password-reset token', async ({ expect }) => {
    const user = await registerUser()
    expect((await requestReset(user.email)).status).toBe(202)
    const resetToken = await tokenFromEmail(user.email, 'reset-password')
    await expectProblem(await verifyEmail(resetToken), 400, 'token_invalid')
    expect(await emailVerifiedOf(user)).toBe(false)
  })

  it('answers 400 token_expired to an expired token and leaves the email unverified', async ({ expect }) => {
    const user = await registerUser()
    const token = await tokenFromEmail(user.email, 'verify-email')
    await expireOneTimeToken(token, 'email_verification')
    await expectProblem(await verifyEmail(token), 400, 'token_expired')
    expect(await emailVerifiedOf(user)).toBe(false)
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const user = await registerUser()
    const token = await tokenFromEmail(user.email, 'verify-email')
    const res = await api('POST', '/auth/email/verify', form({ token }), undefined, FORM)
    expect(res.status).toBe(204)
    expect(await emailVerifiedOf(user)).toBe(true)
  })

  it('answers 400 naming token when it is missing', async ({ expect }) => {
    const problem = await expectProblem(await api('POST', '/auth/email/verify', {}), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('token')
  })
})

describe('POST /api/v1/auth/email/resend', () => {
  it('answers 202 to a body-less request without Content-Type and queues a new link', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const first = await tokenFromEmail(user.email, 'verify-email')
    const res = await api('POST', '/auth/email/resend', undefined, tokens.access_token)
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ status: 'accepted' })

    const links = await linksTo(user.email, 'verify-email')
    expect(links).toHaveLength(2)
    const second = await tokenFromEmail(user.email, 'verify-email')
    expect(second).not.toBe(first)
    expect((await verifyEmail(second)).status).toBe(204)
    expect(await emailVerifiedOf(user)).toBe(true)
  })

  it('answers 202 and sends nothing once the email is verified', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    expect((await verifyEmail(await tokenFromEmail(user.email, 'verify-email'))).status).toBe(204)
    const res = await api('POST', '/auth/email/resend', undefined, tokens.access_token)
    expect(res.status).toBe(202)
    expect(await outboxMessagesTo(user.email)).toHaveLength(1)
  })

  it('answers 401 not_authenticated without a token', async ({ expect }) => {
    const res = await api('POST', '/auth/email/resend')
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })
})

describe('POST /api/v1/auth/password/reset', () => {
  it('answers 202 accepted for a known email in any case and emails a reset link', async ({ expect }) => {
    const user = await registerUser()
    const res = await requestReset(user.email.toUpperCase())
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ status: 'accepted' })
    const links = await linksTo(user.email, 'reset-password')
    expect(links).toHaveLength(1)
    expect(links[0]).toMatch(new RegExp(`^${PUBLIC_BASE_URL}/reset-password\\?token=[A-Za-z0-9_-]{20,}$`))
    const [message] = (await outboxMessagesTo(user.email)).filter((m) => m.text.includes('/reset-password?token='))
    expect(message!.recipient).toBe(user.email)
    // The greeting is filled in from the account's row, which the request never read.
    expect(message!.text).toMatch(new RegExp(`^Hello ${user.username},\n`))
    expect(message!.text).not.toContain('\u0001')
  })

  it('answers an unknown email with the identical 202 body and queues nothing', async ({ expect }) => {
    const user = await registerUser()
    const known = await requestReset(user.email)
    const unknownEmail = `${uniqueName('ghost')}@example.com`
    const unknown = await requestReset(unknownEmail)
    expect(unknown.status).toBe(known.status)
    expect(unknown.status).toBe(202)
    expect(await unknown.text()).toBe(await known.text())
    expect(unknown.headers.get('content-type')).toBe(known.headers.get('content-type'))
    expect(await outboxMessagesTo(unknownEmail)).toEqual([])
  })

  it('answers 400 naming email for an invalid email', async ({ expect }) => {
    const problem = await expectProblem(await requestReset('not-an-email'), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('email')
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('POST', '/auth/password/reset', form({ email: user.email }), undefined, FORM)
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ status: 'accepted' })
    expect(await linksTo(user.email, 'reset-password')).toHaveLength(1)
  })

  it('stores only a hash of the token, never the token itself', async ({ expect }) => {
    const user = await registerUser()
    expect((await requestReset(user.email)).status).toBe(202)
    const token = await tokenFromEmail(user.email, 'reset-password')
    const { results } = await env.DB.prepare(
      "SELECT * FROM one_time_tokens WHERE user_id = ? AND purpose = 'password_reset'",
    )
      .bind(user.id)
      .all<Record<string, unknown>>()
    expect(results).toHaveLength(1)
    expect(JSON.stringify(results)).not.toContain(token)
    expect(results[0]!.token_hash).toBe(await sha256Base64Url(token))
  })
})

describe('POST /api/v1/auth/password/reset/confirm', () => {
  async function resetTokenFor(user: RegisteredUser): Promise<string> {
    const res = await requestReset(user.email)
    if (res.status !== 202) throw new Error(`password reset failed: ${res.status}`)
    return tokenFromEmail(user.email, 'reset-password')
  }

  it('sets the new password (204): the new one logs in, the old one does not', async ({ expect }) => {
    const user = await registerUser()
    const res = await confirmReset(await resetTokenFor(user))
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(200)
    await expectProblem(await tokenLogin(user.username, user.password), 401, 'invalid_credentials')
  })

  it('revokes every session from before', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const second = await login(user)
    expect((await confirmReset(await resetTokenFor(user))).status).toBe(204)
    for (const pair of [tokens, second]) {
      await expectProblem(await me(pair.access_token), 401, 'token_revoked')
      expect((await refresh(pair.refresh_token)).status).toBe(401)
    }
  })

  it('is single-use: a second confirm answers 400 and keeps the first new password', async ({ expect }) => {
    const user = await registerUser()
    const token = await resetTokenFor(user)
    expect((await confirmReset(token)).status).toBe(204)
    await expectProblem(await confirmReset(token, 'a second new passphrase'), 400, 'token_invalid')
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(200)
    await expectProblem(await tokenLogin(user.username, 'a second new passphrase'), 401, 'invalid_credentials')
  })

  it('answers 400 token_expired to an expired token and leaves the password unchanged', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const token = await resetTokenFor(user)
    await expireOneTimeToken(token, 'password_reset')
    await expectProblem(await confirmReset(token), 400, 'token_expired')
    expect((await tokenLogin(user.username, user.password)).status).toBe(200)
    await expectProblem(await tokenLogin(user.username, NEW_PASSWORD), 401, 'invalid_credentials')
    expect((await me(tokens.access_token)).status).toBe(200)
  })

  it('answers 400 token_invalid to an email-verification token', async ({ expect }) => {
    const user = await registerUser()
    const verificationToken = await tokenFromEmail(user.email, 'verify-email')
    await expectProblem(await confirmReset(verificationToken), 400, 'token_invalid')
    expect((await tokenLogin(user.username, user.password)).status).toBe(200)
  })

  it('answers 400 naming new_password when it is too short, and spends nothing', async ({ expect }) => {
    const user = await registerUser()
    const token = await resetTokenFor(user)
    const problem = await expectProblem(await confirmReset(token, 'short'), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('new_password')
    expect((await confirmReset(token)).status).toBe(204)
  })

  it('answers 400 naming token when it is missing', async ({ expect }) => {
    const problem = await expectProblem(
      await api('POST', '/auth/password/reset/confirm', { new_password: NEW_PASSWORD }),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((e) => e.path)).toContain('token')
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const user = await registerUser()
    const token = await resetTokenFor(user)
    const res = await api(
      'POST',
      '/auth/password/reset/confirm',
      form({ token, new_password: NEW_PASSWORD }),
      undefined,
      FORM,
    )
    expect(res.status).toBe(204)
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(200)
  })
})

describe('POST /api/v1/auth/password/change', () => {
  function changePassword(accessToken: string, oldPassword: string, newPassword = NEW_PASSWORD): Promise<Response> {
    return api('POST', '/auth/password/change', { old_password: oldPassword, new_password: newPassword }, accessToken)
  }

  it('answers 401 invalid_credentials to a wrong old_password and changes nothing', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    await expectProblem(await changePassword(tokens.access_token, 'not the password'), 401, 'invalid_credentials')
    expect((await me(tokens.access_token)).status).toBe(200)
    expect((await tokenLogin(user.username, user.password)).status).toBe(200)
  })

  it('returns a new token pair in a new session and ends every earlier session', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const otherSession = await login(user)
    const res = await changePassword(tokens.access_token, user.password)
    expect(res.status).toBe(200)
    const pair = (await res.json()) as TokenPair
    expectTokenPairShape(pair)
    const newSid = decodeJwt(pair.access_token).payload.sid
    expect(decodeJwt(pair.refresh_token).payload.sid).toBe(newSid)
    expect(newSid).not.toBe(decodeJwt(tokens.access_token).payload.sid)
    expect(newSid).not.toBe(decodeJwt(otherSession.access_token).payload.sid)

    const current = await me(pair.access_token)
    expect(current.status).toBe(200)
    expect(await current.json()).toMatchObject({ id: user.id })
    expect((await refresh(pair.refresh_token)).status).toBe(200)

    for (const old of [tokens, otherSession]) {
      await expectProblem(await me(old.access_token), 401, 'token_revoked')
      expect((await refresh(old.refresh_token)).status).toBe(401)
    }
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(200)
    await expectProblem(await tokenLogin(user.username, user.password), 401, 'invalid_credentials')
  })

  it('answers 400 naming new_password when it is too short', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const problem = await expectProblem(
      await changePassword(tokens.access_token, user.password, 'short'),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((e) => e.path)).toContain('new_password')
    expect((await tokenLogin(user.username, user.password)).status).toBe(200)
  })

  it('answers 401 not_authenticated without a token', async () => {
    await expectProblem(
      await api('POST', '/auth/password/change', { old_password: 'whatever it was', new_password: NEW_PASSWORD }),
      401,
      'not_authenticated',
    )
  })
})

/** Every token of the `<base>/<path>?token=` links emailed to `recipient`, oldest first. */
async function tokensEmailedTo(recipient: string, path: string): Promise<string[]> {
  return (await linksTo(recipient, path)).map((link) => decodeURIComponent(new URL(link).searchParams.get('token')!))
}

describe('Reset links end with what should end them', () => {
  it('a link is dead once the account no longer has the address it was mailed to', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    expect((await requestReset(user.email)).status).toBe(202)
    const resetToken = await tokenFromEmail(user.email, 'reset-password')
    const moved = await api('PATCH', '/users/me', { email: `${uniqueName('moved')}@example.com` }, tokens.access_token)
    expect(moved.status).toBe(200)

    await expectProblem(await confirmReset(resetToken), 400, 'token_invalid')
    expect((await tokenLogin(user.username, user.password)).status).toBe(200)
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(401)
  })

  it('spending one link spends every other reset link of the user', async ({ expect }) => {
    const user = await registerUser()
    expect((await requestReset(user.email)).status).toBe(202)
    expect((await requestReset(user.email)).status).toBe(202)
    const [first, second] = await tokensEmailedTo(user.email, 'reset-password')
    expect(first).toBeDefined()
    expect(second).toBeDefined()

    expect((await confirmReset(second!)).status).toBe(204)
    await expectProblem(await confirmReset(first!, 'a different new password'), 400, 'token_invalid')
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(200)
  })

  it('a password change spends every outstanding reset link', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    expect((await requestReset(user.email)).status).toBe(202)
    const resetToken = await tokenFromEmail(user.email, 'reset-password')
    const changed = await api(
      'POST',
      '/auth/password/change',
      { old_password: user.password, new_password: NEW_PASSWORD },
      tokens.access_token,
    )
    expect(changed.status).toBe(200)

    await expectProblem(await confirmReset(resetToken, 'what the attacker wanted'), 400, 'token_invalid')
    expect((await tokenLogin(user.username, NEW_PASSWORD)).status).toBe(200)
  })

  it('an email verification link sent to an address the account no longer has verifies nothing and says so', async ({
    expect,
  }) => {
    const { user, tokens } = await registerAndLogin()
    const oldLink = await tokenFromEmail(user.email, 'verify-email')
    const newEmail = `${uniqueName('moved')}@example.com`
    expect((await api('PATCH', '/users/me', { email: newEmail }, tokens.access_token)).status).toBe(200)
    await expectProblem(await verifyEmail(oldLink), 400, 'token_invalid')
    expect(await emailVerifiedOf(user)).toBe(false)
  })
})

describe('POST /api/v1/auth/password/reset/confirm checks the link before any costly work', () => {
  it('hashes nothing for an unknown, spent or expired link', async ({ expect }) => {
    const user = await registerUser()
    expect((await requestReset(user.email)).status).toBe(202)
    const resetToken = await tokenFromEmail(user.email, 'reset-password')
    expect((await confirmReset(resetToken)).status).toBe(204)

    const deriveBits = vi.spyOn(crypto.subtle, 'deriveBits')
    try {
      await expectProblem(await confirmReset('no-such-token-at-all'), 400, 'token_invalid')
      await expectProblem(await confirmReset(resetToken), 400, 'token_invalid')
      expect(deriveBits).not.toHaveBeenCalled()
    } finally {
      deriveBits.mockRestore()
    }
  })
})

describe('At most 3 emails of a kind to one address an hour (no mail bombing)', () => {
  it('caps verification resends, and the answer stays 202', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const statuses: number[] = []
    for (let i = 0; i < 5; i += 1)
      statuses.push((await api('POST', '/auth/email/resend', undefined, tokens.access_token)).status)
    expect(statuses).toEqual([202, 202, 202, 202, 202])
    // The registration email and two resends.
    expect(await linksTo(user.email, 'verify-email')).toHaveLength(3)
  })

  it('caps email changes that point at the same address, and the answer is unchanged', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const victim = `${uniqueName('victim')}@example.com`
    const bodies: unknown[] = []
    for (let i = 0; i < 4; i += 1) {
      const toVictim = await api('PATCH', '/users/me', { email: victim }, tokens.access_token)
      expect(toVictim.status).toBe(200)
      bodies.push(await toVictim.json())
      expect(
        (await api('PATCH', '/users/me', { email: `${uniqueName('elsewhere')}@example.com` }, tokens.access_token))
          .status,
      ).toBe(200)
    }
    expect(await linksTo(victim, 'verify-email')).toHaveLength(3)
    expect(new Set(bodies.map((body) => JSON.stringify({ ...(body as object), last_login_at: null })))).toHaveProperty(
      'size',
      1,
    )
  })

  it('caps password-reset emails, and the answer stays the same 202', async ({ expect }) => {
    const user = await registerUser()
    for (let i = 0; i < 5; i += 1) {
      const res = await requestReset(user.email.toUpperCase())
      expect(res.status).toBe(202)
      expect(await res.json()).toEqual({ status: 'accepted' })
    }
    expect(await linksTo(user.email, 'reset-password')).toHaveLength(3)
  })
})
