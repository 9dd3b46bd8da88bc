import { describe, expect, it } from 'vitest'
import { stopTheClockMidStep, totpCodeAt } from './stopped-clock'
import { api, decodeJwt, expectProblem, login, outboxMessagesTo, tokenFromEmail, uniqueName } from './helpers'
import type { RegisteredUser, TokenPair } from './helpers'
import { TEST_PROVIDERS, sha256HexOf, signIdToken } from './oidc-provider'
import { SoftAuthenticator } from './webauthn-authenticator'

// Pre-account takeover, over HTTP: someone signs up with another person's address (or signs in
// through a provider that did not verify it), then adds their own ways in: a linked provider, a
// second factor. When the mailbox's owner takes the account back with a password reset, every
// method added while the address was unverified goes, every session ends, and the owner gets one
// email listing what was removed. Methods added while the address was verified stay, and a plain
// verification link removes nothing.
//
// TOTP codes depend on the time: the worker runs in this isolate (test/helpers.ts fetchWorker) and
// reads the same Date, so each test stops the clock in the middle of a 30 s step and moves it on
// by hand.

const STEP_MS = 30_000
/** REAUTH_MAX_AGE, the default of src/config.ts. */
const REAUTH_MAX_AGE_MS = 600_000
const REMOVED = 'Sign-in methods were removed from your edgepress account'
const NEW_PASSWORD = 'the owner’s own new password'

const clock = stopTheClockMidStep()
/** Moves the stopped clock on by one TOTP step: the next code is a new one, and nothing happens in the same instant. */
const nextStep = (): void => clock.advance(STEP_MS)

interface ProviderToken {
  id_token: string
  nonce: string
  sub: string
  email: string
}

/** A Google ID token (nonce as sent); its email_verified counts only for Gmail or with an `hd` claim. */
async function googleToken(options: {
  sub?: string
  email?: string
  email_verified?: boolean
  claims?: Record<string, unknown>
}): Promise<ProviderToken> {
  const nonce = crypto.randomUUID()
  const sub = options.sub ?? String(100_000_000 + Math.floor(Math.random() * 1e9))
  const email = options.email ?? `${uniqueName('g')}@gmail.com`
  const id_token = await signIdToken({
    kid: 'google-1',
    iss: 'https://accounts.google.com',
    aud: TEST_PROVIDERS.google.audiences[0],
    email_verified: options.email_verified ?? true,
    nonce,
    sub,
    email,
    ...(options.claims === undefined ? {} : { claims: options.claims }),
  })
  return { id_token, nonce, sub, email }
}

/** An Apple ID token (nonce: SHA-256 hex of the raw one; email_verified as a string). */
async function appleToken(options: {
  sub?: string
  email: string
  email_verified: 'true' | 'false'
}): Promise<ProviderToken> {
  const nonce = crypto.randomUUID()
  const sub = options.sub ?? `000123.${crypto.randomUUID().replaceAll('-', '')}.0042`
  const id_token = await signIdToken({
    kid: 'apple-1',
    iss: TEST_PROVIDERS.apple.issuers[0],
    aud: TEST_PROVIDERS.apple.audiences[0],
    email_verified: options.email_verified,
    nonce: await sha256HexOf(nonce),
    sub,
    email: options.email,
  })
  return { id_token, nonce, sub, email: options.email }
}

function providerSignIn(provider: string, token: ProviderToken): Promise<Response> {
  return api('POST', `/auth/oidc/${provider}`, { id_token: token.id_token, nonce: token.nonce })
}

/**
 * Asserts a sign-in did not reach the account `userId`: neither a token pair for it nor the
 * MFA token of its second step. It may have created another account, or been refused.
 */
async function expectDoesNotReach(res: Response, userId: number): Promise<void> {
  expect(res.status).toBeLessThan(500)
  const body = (await res.json()) as { access_token?: string; code?: string; mfa_token?: string }
  const token = body.access_token ?? body.mfa_token
  if (token !== undefined) expect(decodeJwt(token).payload.sub).not.toBe(String(userId))
}

/** The user id a sign-in reached: from its token pair, or from its MFA token when a second factor is on. */
async function userReachedBy(res: Response): Promise<number> {
  const body = (await res.json()) as { access_token?: string; mfa_token?: string }
  const token = body.access_token ?? body.mfa_token
  expect(token, JSON.stringify(body)).toEqual(expect.any(String))
  return Number(decodeJwt(token!).payload.sub)
}

async function register(user: Omit<RegisteredUser, 'id'>): Promise<RegisteredUser> {
  const res = await api('POST', '/auth/register', user)
  expect(res.status, await res.clone().text()).toBe(201)
  return { id: ((await res.json()) as { id: number }).id, ...user }
}

/** Signs up with `email` (whoever owns it), unverified. */
function registerWith(email: string, who: 'squatter' | 'owner' = 'squatter'): Promise<RegisteredUser> {
  return register({ username: uniqueName(who), email, password: `the ${who}’s password` })
}

const victimAddress = (): string => `${uniqueName('victim')}@example.com`

async function linkGoogle(token: ProviderToken, accessToken: string): Promise<void> {
  const res = await api('POST', '/auth/oidc/google/link', { id_token: token.id_token, nonce: token.nonce }, accessToken)
  expect(res.status, await res.clone().text()).toBe(204)
}

/** Turns TOTP on in the session of `accessToken` (a fresh sign-in: no step-up needed). */
async function enrolTotp(accessToken: string): Promise<{ secret: string; recoveryCodes: string[] }> {
  const started = await api('POST', '/auth/mfa/totp', undefined, accessToken)
  expect(started.status, await started.clone().text()).toBe(200)
  const { secret } = (await started.json()) as { secret: string }
  const confirmed = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret) }, accessToken)
  expect(confirmed.status, await confirmed.clone().text()).toBe(200)
  nextStep()
  return { secret, recoveryCodes: ((await confirmed.json()) as { recovery_codes: string[] }).recovery_codes }
}

async function verifyEmailByLink(email: string): Promise<void> {
  const res = await api('POST', '/auth/email/verify', { token: await tokenFromEmail(email, 'verify-email') })
  expect(res.status, await res.clone().text()).toBe(204)
}

/** The mailbox's owner resets the password through the emailed link. */
async function resetByMailboxOwner(email: string): Promise<void> {
  nextStep()
  const requested = await api('POST', '/auth/password/reset', { email })
  expect(requested.status).toBe(202)
  const token = await tokenFromEmail(email, 'reset-password')
  const confirmed = await api('POST', '/auth/password/reset/confirm', { token, new_password: NEW_PASSWORD })
  expect(confirmed.status, await confirmed.clone().text()).toBe(204)
  nextStep()
}

/** The owner's password login after the reset (by address: they never chose the username). */
async function ownerLogin(email: string): Promise<Response> {
  return api('POST', '/auth/token', { username: email, password: NEW_PASSWORD })
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

async function removalEmails(email: string): Promise<string[]> {
  return (await outboxMessagesTo(email)).filter((message) => message.subject === REMOVED).map((message) => message.text)
}

describe('a password reset by the mailbox owner takes a squatted account back', () => {
  it('the repro: the squatter’s provider and factor go, their sessions end, the owner is told once', async () => {
    // The squatter signs up with the victim's address and adds their own ways in.
    const email = victimAddress()
    const squatter = await registerWith(email)
    const signedIn = await login(squatter)
    // A step-up is no obstacle: they know the password they chose.
    clock.advance(REAUTH_MAX_AGE_MS + STEP_MS)
    const aged = await api('POST', '/auth/token/refresh', { refresh_token: signedIn.refresh_token })
    const agedPair = (await aged.json()) as TokenPair
    await expectProblem(
      await api('POST', '/auth/mfa/totp', undefined, agedPair.access_token),
      403,
      'reauthentication_required',
    )
    const steppedUp = await api('POST', '/auth/reauthenticate', { password: squatter.password }, agedPair.access_token)
    expect(steppedUp.status, await steppedUp.clone().text()).toBe(200)
    const squatterSession = (await steppedUp.json()) as TokenPair
    const squattersGoogle = await googleToken({})
    await linkGoogle(squattersGoogle, squatterSession.access_token)
    const { secret } = await enrolTotp(squatterSession.access_token)
    expect(await me(squatterSession.access_token)).toMatchObject({
      email,
      email_verified: false,
      mfa_enabled: true,
      providers: ['google'],
    })
    // Their Google sign-in reaches the account (its second step, the factor being theirs too).
    const before = await providerSignIn('google', await googleToken({ sub: squattersGoogle.sub }))
    await expectProblem(before.clone(), 401, 'mfa_required')
    expect(await userReachedBy(before)).toBe(squatter.id)

    await resetByMailboxOwner(email)

    // The squatter's provider sign-in no longer reaches the account.
    const after = await providerSignIn(
      'google',
      await googleToken({ sub: squattersGoogle.sub, email: squattersGoogle.email }),
    )
    await expectDoesNotReach(after, squatter.id)
    // Their sessions ended, and their password is no longer the account's.
    await expectProblem(await api('GET', '/users/me', undefined, squatterSession.access_token), 401, 'token_revoked')
    await expectProblem(
      await api('POST', '/auth/token/refresh', { refresh_token: squatterSession.refresh_token }),
      401,
      'token_revoked',
    )
    await expectProblem(
      await api('POST', '/auth/token', { username: squatter.username, password: squatter.password }),
      401,
      'invalid_credentials',
    )
    // The factor is gone: the password alone signs in, and no code of the squatter's authenticator is asked for.
    const owner = await ownerLogin(email)
    expect(owner.status, await owner.clone().text()).toBe(200)
    const ownerPair = (await owner.json()) as TokenPair
    expect(await me(ownerPair.access_token)).toMatchObject({
      id: squatter.id,
      email,
      email_verified: true,
      mfa_enabled: false,
      providers: [],
    })
    expect(
      (await api('POST', '/auth/mfa/recovery-codes', { code: totpCodeAt(secret) }, ownerPair.access_token)).status,
    ).toBe(409)

    // One email to the owner, listing both methods.
    const notices = await removalEmails(email)
    expect(notices).toHaveLength(1)
    expect(notices[0]).toContain('sign-in with google')
    expect(notices[0]).toContain('the two-factor authenticator and its recovery codes')
  })

  it('an MFA token the squatter got before the reset cannot finish a sign-in after it', async () => {
    const email = victimAddress()
    const squatter = await registerWith(email)
    const session = await login(squatter)
    const { secret } = await enrolTotp(session.access_token)
    const started = await api('POST', '/auth/token', { username: squatter.username, password: squatter.password })
    const { mfa_token: mfaToken } = (await expectProblem(started, 401, 'mfa_required')) as unknown as {
      mfa_token: string
    }

    await resetByMailboxOwner(email)

    await expectProblem(
      await api('POST', '/auth/mfa/verify', { mfa_token: mfaToken, code: totpCodeAt(secret) }),
      401,
      'token_invalid',
    )
  })

  it('keeps the methods added while the address was verified; a reset with nothing to remove sends no removal email', async () => {
    const email = victimAddress()
    const owner = await registerWith(email, 'owner')
    await verifyEmailByLink(email)
    const session = await login(owner)
    const google = await googleToken({})
    await linkGoogle(google, session.access_token)
    const { secret } = await enrolTotp(session.access_token)

    await resetByMailboxOwner(email)

    // The reset still ends every session.
    await expectProblem(await api('GET', '/users/me', undefined, session.access_token), 401, 'token_revoked')
    // The factor stays: the password step asks for it, and the owner's authenticator finishes the sign-in.
    const started = await ownerLogin(email)
    const { mfa_token: mfaToken } = (await expectProblem(started, 401, 'mfa_required')) as unknown as {
      mfa_token: string
    }
    const finished = await api('POST', '/auth/mfa/verify', { mfa_token: mfaToken, code: totpCodeAt(secret) })
    expect(finished.status, await finished.clone().text()).toBe(200)
    const pair = (await finished.json()) as TokenPair
    expect(await me(pair.access_token)).toMatchObject({ id: owner.id, mfa_enabled: true, providers: ['google'] })
    // So does the provider: its sign-in still reaches the account.
    expect(await userReachedBy(await providerSignIn('google', await googleToken({ sub: google.sub })))).toBe(owner.id)
    expect(await removalEmails(email)).toEqual([])
  })

  it('judges each method by when it was added: a provider linked before verification goes, a factor added after stays', async () => {
    const email = victimAddress()
    const user = await registerWith(email, 'owner')
    const session = await login(user)
    const google = await googleToken({})
    await linkGoogle(google, session.access_token)
    await verifyEmailByLink(email)
    await enrolTotp(session.access_token)

    await resetByMailboxOwner(email)

    await expectProblem(await ownerLogin(email), 401, 'mfa_required')
    await expectDoesNotReach(
      await providerSignIn('google', await googleToken({ sub: google.sub, email: google.email })),
      user.id,
    )
    const notices = await removalEmails(email)
    expect(notices).toHaveLength(1)
    expect(notices[0]).toContain('sign-in with google')
    expect(notices[0]).not.toContain('two-factor')
  })
})

describe('squatting through an email change', () => {
  // A method's provenance is the address it was added under. Someone verifies their OWN address,
  // links their Google identity (added while verified), then changes the account's email to the
  // victim's address: the email change counts every existing method as added while unverified,
  // so the victim's reset from their mailbox removes it.
  it('a method added under the squatter’s own verified address does not survive the new address owner’s reset', async () => {
    const ownAddress = `${uniqueName('squatter')}@example.com`
    const squatter = await registerWith(ownAddress)
    await verifyEmailByLink(ownAddress)
    const session = await login(squatter)
    const google = await googleToken({})
    await linkGoogle(google, session.access_token)
    const email = victimAddress()
    const moved = await api('PATCH', '/users/me', { email }, session.access_token)
    expect(moved.status, await moved.clone().text()).toBe(200)

    await resetByMailboxOwner(email)

    await expectDoesNotReach(
      await providerSignIn('google', await googleToken({ sub: google.sub, email: google.email })),
      squatter.id,
    )
    expect(await removalEmails(email)).toHaveLength(1)
  })
})

describe('a plain email verification link', () => {
  it('removes nothing and ends no session; what was added before it still goes at a later reset', async () => {
    const email = victimAddress()
    const squatter = await registerWith(email)
    const session = await login(squatter)
    const google = await googleToken({})
    await linkGoogle(google, session.access_token)
    await enrolTotp(session.access_token)

    await verifyEmailByLink(email)

    expect(await me(session.access_token)).toMatchObject({
      email_verified: true,
      mfa_enabled: true,
      providers: ['google'],
    })
    const signIn = await providerSignIn('google', await googleToken({ sub: google.sub }))
    await expectProblem(signIn.clone(), 401, 'mfa_required')
    expect(await userReachedBy(signIn)).toBe(squatter.id)
    expect(await removalEmails(email)).toEqual([])

    // Verified since, but added before: the reset by the mailbox's owner still removes both.
    await resetByMailboxOwner(email)
    const owner = await ownerLogin(email)
    expect(owner.status, await owner.clone().text()).toBe(200)
    expect(await me(((await owner.json()) as TokenPair).access_token)).toMatchObject({
      mfa_enabled: false,
      providers: [],
    })
    expect(await removalEmails(email)).toHaveLength(1)
  })
})

describe('native sign-in with a provider email that is not verified', () => {
  it.each([
    {
      name: 'Apple with email_verified "false"',
      provider: 'apple',
      token: (email: string, sub?: string) => appleToken({ email, sub, email_verified: 'false' }),
    },
    {
      name: 'Google for an address outside Gmail, without hd (its email_verified is not trusted)',
      provider: 'google',
      token: (email: string, sub?: string) => googleToken({ email, sub, email_verified: true }),
    },
  ])(
    '$name creates an unverified account, whose identity a reset of the address removes',
    async ({ provider, token }) => {
      const email = victimAddress()
      const first = await token(email)
      const created = await providerSignIn(provider, first)
      expect(created.status, await created.clone().text()).toBe(200)
      const squatterSession = (await created.json()) as TokenPair
      const account = await me(squatterSession.access_token)
      expect(account).toMatchObject({ email, email_verified: false, providers: [provider] })

      // The account has no password yet: the mailbox's owner sets one through the reset.
      await resetByMailboxOwner(email)

      await expectDoesNotReach(await providerSignIn(provider, await token(email, first.sub)), account.id)
      await expectProblem(await api('GET', '/users/me', undefined, squatterSession.access_token), 401, 'token_revoked')
      const owner = await ownerLogin(email)
      expect(owner.status, await owner.clone().text()).toBe(200)
      expect(await me(((await owner.json()) as TokenPair).access_token)).toMatchObject({
        id: account.id,
        email_verified: true,
        providers: [],
      })
      const notices = await removalEmails(email)
      expect(notices).toHaveLength(1)
      expect(notices[0]).toContain(`sign-in with ${provider}`)
    },
  )

  it('an account created with a verified provider email keeps its identity through a reset', async () => {
    const domain = `${uniqueName('corp').replaceAll('_', '-')}.example`
    const email = `${uniqueName('staff')}@${domain}`
    const first = await googleToken({ email, claims: { hd: domain } })
    const created = await providerSignIn('google', first)
    expect(created.status, await created.clone().text()).toBe(200)
    const account = await me(((await created.json()) as TokenPair).access_token)
    expect(account).toMatchObject({ email, email_verified: true, providers: ['google'] })

    await resetByMailboxOwner(email)

    const again = await providerSignIn('google', await googleToken({ sub: first.sub, email, claims: { hd: domain } }))
    expect(again.status, await again.clone().text()).toBe(200)
    expect(await userReachedBy(again)).toBe(account.id)
    expect(await removalEmails(email)).toEqual([])
  })
})

describe('passkeys added while the address was unverified', () => {
  /** Registers a new passkey for the signed-in `accessToken`: its authenticator. */
  async function addPasskey(accessToken: string, name: string): Promise<SoftAuthenticator> {
    const authenticator = await SoftAuthenticator.create()
    const started = await api('POST', '/auth/passkeys/register/options', undefined, accessToken)
    expect(started.status, await started.clone().text()).toBe(200)
    const { challenge_id, options } = (await started.json()) as {
      challenge_id: string
      options: { challenge: string; user: { id: string } }
    }
    const res = await api(
      'POST',
      '/auth/passkeys/register',
      { challenge_id, response: await authenticator.register(options), name },
      accessToken,
    )
    expect(res.status, await res.clone().text()).toBe(201)
    return authenticator
  }

  async function passkeySignIn(authenticator: SoftAuthenticator): Promise<Response> {
    const started = await api('POST', '/auth/passkeys/login/options', {})
    const { challenge_id, options } = (await started.json()) as { challenge_id: string; options: { challenge: string } }
    return api('POST', '/auth/passkeys/login', { challenge_id, response: await authenticator.assert(options) })
  }

  it('go at the owner’s reset and are named in the email; one added after verification stays', async () => {
    const email = victimAddress()
    const squatter = await registerWith(email)
    const session = await login(squatter)
    const squatters = await addPasskey(session.access_token, 'Squatter phone')
    expect((await passkeySignIn(squatters)).status).toBe(200)

    await resetByMailboxOwner(email)

    await expectProblem(await passkeySignIn(squatters), 401, 'invalid_credentials')
    const notices = await removalEmails(email)
    expect(notices).toHaveLength(1)
    expect(notices[0]).toContain('the passkey “Squatter phone”')

    // The owner's own passkey, added once the address is verified, survives a later reset.
    const owner = (await (await ownerLogin(email)).json()) as TokenPair
    const owners = await addPasskey(owner.access_token, 'Owner laptop')
    nextStep()
    await resetByMailboxOwner(email)
    expect((await passkeySignIn(owners)).status).toBe(200)
    expect(await removalEmails(email)).toHaveLength(1)
  })

  it('an email change makes every passkey unproven: the new address owner’s reset removes them', async () => {
    const ownAddress = `${uniqueName('squatter')}@example.com`
    const squatter = await registerWith(ownAddress)
    await verifyEmailByLink(ownAddress)
    const session = await login(squatter)
    const squatters = await addPasskey(session.access_token, 'Added while verified')
    const email = victimAddress()
    const moved = await api('PATCH', '/users/me', { email }, session.access_token)
    expect(moved.status, await moved.clone().text()).toBe(200)

    await resetByMailboxOwner(email)

    await expectProblem(await passkeySignIn(squatters), 401, 'invalid_credentials')
    expect(await removalEmails(email)).toHaveLength(1)
  })
})
