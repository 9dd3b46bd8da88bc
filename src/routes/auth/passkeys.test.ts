import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import {
  api,
  decodeJwt,
  expectProblem,
  fetchWorker,
  login,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  uniqueName,
} from '../../../test/helpers'
import type { RegisteredUser, TokenPair } from '../../../test/helpers'
import { TEST_PROVIDERS, signIdToken } from '../../../test/oidc-provider'
import { runScheduledMaintenance } from '../../scheduled'
import { stopTheClockMidStep, totpCodeAt } from '../../../test/stopped-clock'
import { SoftAuthenticator, base64Url, bytesOf, cbor } from '../../../test/webauthn-authenticator'
import type { Bend, CborValue, KeyKind } from '../../../test/webauthn-authenticator'

// Passkeys over HTTP, against a software authenticator (test/webauthn-authenticator.ts) that
// makes what a browser and a platform authenticator would send, and can bend any part of it. The
// worker runs with its test configuration: no WEBAUTHN_* variables, so the RP id is `localhost`
// and the one accepted origin http://localhost:8787 (PUBLIC_BASE_URL's default). The clock is
// stopped in the middle of a TOTP step and moved by hand, so no expiry depends on the machine.

const STEP_MS = 30_000
const CHALLENGE_TTL_MS = 5 * 60_000
const REAUTH_MAX_AGE_MS = 600_000

const SUBJECTS = {
  added: 'A passkey was added to your edgepress account',
  removed: 'A passkey was removed from your edgepress account',
}

const clock = stopTheClockMidStep()
const { advance } = clock

interface CreationOptions {
  challenge: string
  rp: { id: string; name: string }
  user: { id: string; name: string; displayName: string }
  pubKeyCredParams: { type: string; alg: number }[]
  timeout: number
  excludeCredentials: { type: string; id: string; transports?: string[] }[]
  authenticatorSelection: Record<string, unknown>
  attestation: string
  extensions: Record<string, unknown>
}

interface RequestOptions {
  challenge: string
  rpId: string
  timeout: number
  allowCredentials: { type: string; id: string; transports?: string[] }[]
  userVerification: string
}

interface PasskeyView {
  id: number
  name: string
  created_at: string
  last_used_at: string | null
  backed_up: boolean
  transports: string[]
}

async function registrationOptions(accessToken: string): Promise<{ challenge_id: string; options: CreationOptions }> {
  const res = await api('POST', '/auth/passkeys/register/options', undefined, accessToken)
  expect(res.status, await res.clone().text()).toBe(200)
  return res.json()
}

function postRegistration(accessToken: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return api('POST', '/auth/passkeys/register', body, accessToken, headers)
}

/** Registers `authenticator`'s credential for the signed-in user: the 201 view. */
async function registerPasskey(
  accessToken: string,
  authenticator: SoftAuthenticator,
  extra: { name?: string; headers?: Record<string, string> } = {},
): Promise<PasskeyView> {
  const { challenge_id, options } = await registrationOptions(accessToken)
  const response = await authenticator.register(options)
  const res = await postRegistration(accessToken, { challenge_id, response, name: extra.name }, extra.headers)
  expect(res.status, await res.clone().text()).toBe(201)
  return res.json()
}

async function loginOptions(body?: unknown): Promise<{ challenge_id: string; options: RequestOptions }> {
  const res = await api('POST', '/auth/passkeys/login/options', body)
  expect(res.status, await res.clone().text()).toBe(200)
  return res.json()
}

function postLogin(body: unknown, query = ''): Promise<Response> {
  return api('POST', `/auth/passkeys/login${query}`, body)
}

/** A usernameless sign-in with `authenticator`, bent by `bend`: the answer. */
async function passkeySignIn(authenticator: SoftAuthenticator, bend: Bend = {}): Promise<Response> {
  const { challenge_id, options } = await loginOptions({})
  return postLogin({ challenge_id, response: await authenticator.assert(options, bend) })
}

/** A fresh user signed in with a password and holding one registered passkey. */
async function userWithPasskey(
  options: Parameters<typeof SoftAuthenticator.create>[0] = {},
): Promise<{ user: RegisteredUser; tokens: TokenPair; authenticator: SoftAuthenticator; passkey: PasskeyView }> {
  const { user, tokens } = await registerAndLogin()
  const authenticator = await SoftAuthenticator.create(options)
  const passkey = await registerPasskey(tokens.access_token, authenticator)
  return { user, tokens, authenticator, passkey }
}

async function me(accessToken: string): Promise<{ id: number; passkeys: number; mfa_enabled: boolean }> {
  const res = await api('GET', '/users/me', undefined, accessToken)
  expect(res.status, await res.clone().text()).toBe(200)
  return res.json()
}

async function listPasskeys(accessToken: string): Promise<PasskeyView[]> {
  const res = await api('GET', '/auth/passkeys', undefined, accessToken)
  expect(res.status, await res.clone().text()).toBe(200)
  return ((await res.json()) as { results: PasskeyView[] }).results
}

async function subjectsTo(email: string): Promise<string[]> {
  return (await outboxMessagesTo(email)).map((message) => message.subject)
}

async function storedCounter(credentialId: string): Promise<number> {
  const row = await env.DB.prepare('SELECT sign_count FROM passkeys WHERE credential_id = ?')
    .bind(credentialId)
    .first<{ sign_count: number }>()
  return row?.sign_count ?? -1
}

/** Turns TOTP on for `pair`'s user (the previous step's code confirms it). */
async function enrolTotp(pair: TokenPair): Promise<string> {
  const started = await api('POST', '/auth/mfa/totp', undefined, pair.access_token)
  expect(started.status, await started.clone().text()).toBe(200)
  const { secret } = (await started.json()) as { secret: string }
  const res = await api('POST', '/auth/mfa/totp/confirm', { code: totpCodeAt(secret, -1) }, pair.access_token)
  expect(res.status, await res.clone().text()).toBe(200)
  return secret
}

/** An account made by Google sign-in: no password. */
async function providerAccount(): Promise<{ pair: TokenPair; id: number }> {
  const nonce = crypto.randomUUID()
  const id_token = await signIdToken({
    kid: 'google-1',
    iss: 'https://accounts.google.com',
    aud: TEST_PROVIDERS.google.audiences[0],
    email_verified: true,
    nonce,
    sub: String(100_000_000 + Math.floor(Math.random() * 1e9)),
    email: `${uniqueName('g')}@gmail.com`,
  })
  const res = await api('POST', '/auth/oidc/google', { id_token, nonce })
  expect(res.status, await res.clone().text()).toBe(200)
  const pair = (await res.json()) as TokenPair
  return { pair, id: Number(decodeJwt(pair.access_token).payload.sub) }
}

const BASE64URL = /^[A-Za-z0-9_-]+$/

describe('POST /auth/passkeys/register/options', () => {
  it('gives a fresh challenge, the RP, an opaque user handle, the three algorithms and the rules', async () => {
    const { user, tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/passkeys/register/options', undefined, tokens.access_token)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toContain('no-store')
    const { challenge_id, options } = (await res.json()) as { challenge_id: string; options: CreationOptions }
    expect(challenge_id).toMatch(BASE64URL)
    expect(bytesOf(options.challenge)).toHaveLength(32)
    expect(options.rp).toEqual({ id: 'localhost', name: 'edgepress' })
    expect(options.user.name).toBe(user.username)
    expect(options.user.displayName).toBe(user.username)
    // The handle says nothing about the account: not its id, not its email, 32 random bytes.
    expect(bytesOf(options.user.id)).toHaveLength(32)
    expect(options.user.id).not.toBe(String(user.id))
    expect(new TextDecoder().decode(bytesOf(options.user.id))).not.toContain(user.email)
    expect(options.pubKeyCredParams).toEqual([
      { type: 'public-key', alg: -7 },
      { type: 'public-key', alg: -8 },
      { type: 'public-key', alg: -257 },
    ])
    expect(options.timeout).toBe(CHALLENGE_TTL_MS)
    expect(options.excludeCredentials).toEqual([])
    expect(options.authenticatorSelection).toEqual({
      residentKey: 'required',
      requireResidentKey: true,
      userVerification: 'preferred',
    })
    expect(options.attestation).toBe('none')

    // The same handle every time; a new challenge every time.
    const again = await registrationOptions(tokens.access_token)
    expect(again.options.user.id).toBe(options.user.id)
    expect(again.options.challenge).not.toBe(options.challenge)
    expect(again.challenge_id).not.toBe(challenge_id)
  })

  it('lists the passkeys registered already in excludeCredentials', async () => {
    const { tokens, authenticator } = await userWithPasskey()
    const { options } = await registrationOptions(tokens.access_token)
    expect(options.excludeCredentials).toEqual([
      { type: 'public-key', id: authenticator.credentialId, transports: ['hybrid', 'internal'] },
    ])
  })

  it('needs a token and a recent sign-in', async () => {
    await expectProblem(await api('POST', '/auth/passkeys/register/options'), 401, 'not_authenticated')
    const { user, tokens } = await registerAndLogin()
    advance(REAUTH_MAX_AGE_MS + STEP_MS)
    const refreshed = await api('POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token })
    const aged = (await refreshed.json()) as TokenPair
    await expectProblem(
      await api('POST', '/auth/passkeys/register/options', undefined, aged.access_token),
      403,
      'reauthentication_required',
    )
    const stepped = await api('POST', '/auth/reauthenticate', { password: user.password }, aged.access_token)
    const renewed = (await stepped.json()) as TokenPair
    await registrationOptions(renewed.access_token)
  })

  it('stops at 20 passkeys an account, also for registrations started before the 20th', async () => {
    const { user, tokens } = await registerAndLogin()
    // 19 stored as the table holds them (registering them over HTTP would only cost time).
    const rows = Array.from({ length: 19 }, (_, n) =>
      env.DB.prepare(
        'INSERT INTO passkeys (user_id, credential_id, public_key, algorithm, name, created_at) VALUES (?, ?, ?, -7, ?, ?)',
      ).bind(user.id, `stored-${user.id}-${n}`, '{"kty":"EC"}', `Stored ${n}`, clock.now()),
    )
    await env.DB.batch(rows)
    const [first, second] = await Promise.all([
      registrationOptions(tokens.access_token),
      registrationOptions(tokens.access_token),
    ])
    const answers = await Promise.all(
      [first!, second!].map(async ({ challenge_id, options }) =>
        postRegistration(tokens.access_token, {
          challenge_id,
          response: await (await SoftAuthenticator.create()).register(options),
        }),
      ),
    )
    expect(answers.map((res) => res.status).sort()).toEqual([201, 409])
    await expectProblem(answers.find((res) => res.status === 409)!, 409, 'conflict')
    await expectProblem(
      await api('POST', '/auth/passkeys/register/options', undefined, tokens.access_token),
      409,
      'conflict',
    )
    expect(await listPasskeys(tokens.access_token)).toHaveLength(20)
  })
})

describe('POST /auth/passkeys/register', () => {
  it.for<KeyKind>(['ES256', 'Ed25519', 'RS256'])(
    'registers a %s passkey: 201 with its view, a security email, and /users/me counts it',
    async (kind) => {
      const { user, tokens } = await registerAndLogin()
      const authenticator = await SoftAuthenticator.create({ kind, backedUp: true })
      const passkey = await registerPasskey(tokens.access_token, authenticator, {
        headers: { 'user-agent': 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1' },
      })
      expect(Object.keys(passkey).sort()).toEqual([
        'backed_up',
        'created_at',
        'id',
        'last_used_at',
        'name',
        'transports',
      ])
      expect(passkey).toMatchObject({
        backed_up: true,
        last_used_at: null,
        transports: ['hybrid', 'internal'],
        created_at: new Date(clock.now()).toISOString(),
      })
      expect(passkey.name).toMatch(/^Passkey on /)
      expect(passkey.name).toContain('iOS')
      expect(await subjectsTo(user.email)).toContain(SUBJECTS.added)
      expect((await me(tokens.access_token)).passkeys).toBe(1)
      expect(await listPasskeys(tokens.access_token)).toEqual([passkey])
    },
  )

  it('keeps the name it is given, trimmed, and says it in the email', async () => {
    const { user, tokens } = await registerAndLogin()
    const passkey = await registerPasskey(tokens.access_token, await SoftAuthenticator.create(), {
      name: '  Work laptop  ',
    })
    expect(passkey.name).toBe('Work laptop')
    const [notice] = (await outboxMessagesTo(user.email)).filter((message) => message.subject === SUBJECTS.added)
    expect(notice?.text).toContain('“Work laptop”')
  })

  const BROKEN: [string, Bend, string][] = [
    ['a wrong origin', { origin: 'https://evil.example' }, 'origin'],
    ['a wrong RP id', { rpId: 'evil.example' }, 'RP id'],
    ['an assertion type', { type: 'webauthn.get' }, 'not of a registration'],
    ['another challenge', { challenge: base64Url(crypto.getRandomValues(new Uint8Array(32))) }, 'challenge'],
    ['no user presence', { userPresent: false }, 'did not see the user present'],
    ['a cross-origin frame', { crossOrigin: true }, 'cross-origin'],
    ['backed up (BS) but not eligible (BE)', { backedUp: false, extraFlags: 0x10 }, 'authenticator data'],
  ]

  it.for(BROKEN)('refuses %s: 400 passkey_rejected naming the check, nothing stored', async ([, bend, named]) => {
    const { user, tokens } = await registerAndLogin()
    const { challenge_id, options } = await registrationOptions(tokens.access_token)
    const response = await (await SoftAuthenticator.create()).register(options, bend)
    const problem = await expectProblem(
      await postRegistration(tokens.access_token, { challenge_id, response }),
      400,
      'passkey_rejected',
    )
    expect(problem.detail).toContain(named)
    expect(await listPasskeys(tokens.access_token)).toEqual([])
    expect(await subjectsTo(user.email)).not.toContain(SUBJECTS.added)
  })

  it('refuses an RSA key of another size than 2048 bits', async () => {
    const { tokens } = await registerAndLogin()
    for (const rsaModulusBits of [1024, 3072]) {
      const { challenge_id, options } = await registrationOptions(tokens.access_token)
      const other = await SoftAuthenticator.create({ kind: 'RS256', rsaModulusBits })
      const problem = await expectProblem(
        await postRegistration(tokens.access_token, { challenge_id, response: await other.register(options) }),
        400,
        'passkey_rejected',
      )
      expect(problem.detail).toContain('2048 bits')
    }
  })

  it('takes a challenge once, for 5 minutes, from its own user, issued for registration', async () => {
    let { tokens } = await registerAndLogin()
    const authenticator = await SoftAuthenticator.create()
    const challengeRefused = async (challengeId: string, options: { challenge: string }) => {
      const response = await authenticator.register({ challenge: options.challenge, user: { id: 'aGFuZGxl' } })
      const problem = await expectProblem(
        await postRegistration(tokens.access_token, { challenge_id: challengeId, response }),
        400,
        'passkey_rejected',
      )
      expect(problem.detail).toContain('challenge is unknown, used, expired or not issued to you')
    }

    // Replayed: the first use takes it.
    const used = await registrationOptions(tokens.access_token)
    const first = await authenticator.register(used.options)
    expect(
      (await postRegistration(tokens.access_token, { challenge_id: used.challenge_id, response: first })).status,
    ).toBe(201)
    await challengeRefused(used.challenge_id, used.options)

    // Expired: 5 minutes and it is gone; a millisecond before, it would still do.
    const late = await registrationOptions(tokens.access_token)
    advance(CHALLENGE_TTL_MS)
    // The access token has expired with it: the session's next one (its sign-in still recent).
    const refreshed = await api('POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token })
    tokens = (await refreshed.json()) as TokenPair
    await challengeRefused(late.challenge_id, late.options)

    // Another user's.
    const other = await registerAndLogin()
    const foreign = await registrationOptions(other.tokens.access_token)
    await challengeRefused(foreign.challenge_id, foreign.options)
    // Taken by the attempt: the other user cannot use it either.
    const stolen = await (await SoftAuthenticator.create()).register(foreign.options)
    await expectProblem(
      await postRegistration(other.tokens.access_token, { challenge_id: foreign.challenge_id, response: stolen }),
      400,
      'passkey_rejected',
    )

    // A sign-in challenge.
    const signIn = await loginOptions({})
    await challengeRefused(signIn.challenge_id, signIn.options)

    // Unknown.
    await challengeRefused('no-such-challenge', used.options)
  })

  it('answers 409 passkey_exists for a credential registered already, by anyone, and mails nobody', async () => {
    const { tokens, authenticator, user } = await userWithPasskey()
    const before = await subjectsTo(user.email)
    const again = await registrationOptions(tokens.access_token)
    await expectProblem(
      await postRegistration(tokens.access_token, {
        challenge_id: again.challenge_id,
        response: await authenticator.register(again.options),
      }),
      409,
      'passkey_exists',
    )
    const other = await registerAndLogin()
    const theirs = await registrationOptions(other.tokens.access_token)
    await expectProblem(
      await postRegistration(other.tokens.access_token, {
        challenge_id: theirs.challenge_id,
        response: await authenticator.register(theirs.options),
      }),
      409,
      'passkey_exists',
    )
    expect(await subjectsTo(user.email)).toEqual(before)
    expect(await subjectsTo(other.user.email)).not.toContain(SUBJECTS.added)
    expect(await listPasskeys(other.tokens.access_token)).toEqual([])
  })

  it('refuses a response whose id is not the credential it carries', async () => {
    const { tokens } = await registerAndLogin()
    const { challenge_id, options } = await registrationOptions(tokens.access_token)
    const response = await (await SoftAuthenticator.create()).register(options)
    const otherId = base64Url(crypto.getRandomValues(new Uint8Array(32)))
    const problem = await expectProblem(
      await postRegistration(tokens.access_token, {
        challenge_id,
        response: { ...response, id: otherId, rawId: otherId },
      }),
      400,
      'passkey_rejected',
    )
    expect(problem.detail).toContain('credential')
  })

  it('answers malformed input with a 4xx problem, never a 500', async () => {
    const { tokens } = await registerAndLogin()
    const { challenge_id, options } = await registrationOptions(tokens.access_token)
    const good = await (await SoftAuthenticator.create()).register(options)
    const garbage = base64Url(new TextEncoder().encode('not cbor at all'))
    const bodies: unknown[] = [
      {},
      { challenge_id },
      { challenge_id, response: { ...good, type: 'password' } },
      { challenge_id, response: { ...good, response: { ...good.response, clientDataJSON: 'not base64url!' } } },
      { challenge_id, response: good, name: '' },
      { challenge_id, response: good, name: 'x'.repeat(65) },
    ]
    for (const body of bodies) {
      const res = await postRegistration(tokens.access_token, body)
      expect(res.status, JSON.stringify(body)).toBe(400)
      await expectProblem(res, 400, 'validation_failed')
    }
    // Well-formed JSON whose binary parts are not what WebAuthn encodes.
    const broken = [
      { ...good.response, attestationObject: garbage },
      { ...good.response, clientDataJSON: garbage },
      { ...good.response, attestationObject: base64Url(cbor(new Map([['fmt', 'none']]))) },
      {
        ...good.response,
        attestationObject: base64Url(
          cbor(
            new Map<CborValue, CborValue>([
              ['fmt', 'none'],
              ['attStmt', new Map()],
              ['authData', new Uint8Array(10)],
            ]),
          ),
        ),
      },
    ]
    for (const response of broken) {
      const fresh = await registrationOptions(tokens.access_token)
      const res = await postRegistration(tokens.access_token, {
        challenge_id: fresh.challenge_id,
        response: { ...good, response },
      })
      await expectProblem(res, 400, 'passkey_rejected')
    }
  })
})

describe('POST /auth/passkeys/login/options', () => {
  it('gives a usernameless challenge for {} or no body: empty allowCredentials', async () => {
    for (const body of [{}, undefined]) {
      const { challenge_id, options } = await loginOptions(body)
      expect(challenge_id).toMatch(BASE64URL)
      expect(bytesOf(options.challenge)).toHaveLength(32)
      expect(options).toMatchObject({ rpId: 'localhost', timeout: CHALLENGE_TTL_MS, userVerification: 'preferred' })
      expect(options.allowCredentials).toEqual([])
    }
  })

  it('lists the passkeys of {username} (or its email)', async () => {
    const { user, authenticator } = await userWithPasskey()
    for (const name of [user.username, user.email.toUpperCase()]) {
      const { options } = await loginOptions({ username: name })
      expect(options.allowCredentials).toEqual([
        { type: 'public-key', id: authenticator.credentialId, transports: ['hybrid', 'internal'] },
      ])
    }
  })

  it('answers the same shape for an unknown username or one without passkeys: one stable decoy', async () => {
    const known = await userWithPasskey()
    const withoutPasskey = await registerUser()
    const unknown = uniqueName('nobody')
    const shapes = new Set<string>()
    for (const name of [known.user.username, withoutPasskey.username, unknown]) {
      const res = await api('POST', '/auth/passkeys/login/options', { username: name })
      expect(res.status).toBe(200)
      const body = (await res.json()) as { challenge_id: string; options: RequestOptions }
      const shape = (value: unknown): unknown =>
        Array.isArray(value)
          ? value.slice(0, 1).map(shape)
          : typeof value === 'object' && value !== null
            ? Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, shape(inner)]))
            : typeof value
      shapes.add(JSON.stringify(shape(body)))
      expect([...res.headers.keys()].sort()).toEqual(
        [
          ...(await api('POST', '/auth/passkeys/login/options', { username: known.user.username })).headers.keys(),
        ].sort(),
      )
      expect(body.options.allowCredentials.length).toBeGreaterThanOrEqual(1)
      expect(body.options.allowCredentials.length).toBeLessThanOrEqual(3)
      for (const entry of body.options.allowCredentials) {
        expect(entry).toEqual({ type: 'public-key', id: expect.any(String), transports: ['hybrid', 'internal'] })
      }
      expect(bytesOf(body.options.allowCredentials[0]!.id).length).toBeGreaterThanOrEqual(16)
    }
    expect(shapes.size).toBe(1)
    // The same work, as Server-Timing tells it (calls and waves; durations aside).
    const work = async (name: string) =>
      (await api('POST', '/auth/passkeys/login/options', { username: name })).headers
        .get('server-timing')
        ?.replace(/dur=[\d.]+/g, 'dur')
    expect(await work(unknown)).toBe(await work(known.user.username))
    expect(await work(withoutPasskey.username)).toBe(await work(known.user.username))
    // Asked again, an unknown name gets the same decoy (a real account's list does not change
    // either); another unknown name another one.
    const decoy = async (name: string) =>
      JSON.stringify((await loginOptions({ username: name })).options.allowCredentials)
    expect(await decoy(unknown)).toBe(await decoy(unknown))
    // Every spelling the account lookup takes as one name gets one answer: case, width, ß.
    expect(await decoy(unknown.toUpperCase())).toBe(await decoy(unknown))
    const wide = [...unknown].map((char) => String.fromCharCode(char.charCodeAt(0) + 0xfee0)).join('')
    expect(await decoy(wide)).toBe(await decoy(unknown))
    expect(await decoy(`straße_${unknown}`)).toBe(await decoy(`STRASSE_${unknown}`))
    expect(await decoy(`${unknown}@Example.COM`)).toBe(await decoy(`${unknown.toUpperCase()}@example.com`))
    expect(await decoy(uniqueName('nobody'))).not.toBe(await decoy(unknown))
    expect(await decoy(withoutPasskey.username)).not.toBe(await decoy(unknown))
    // How many decoys a name gets varies from name to name, as real accounts' lists do.
    const counts = new Set<number>()
    for (let n = 0; n < 60; n += 1) {
      counts.add((await loginOptions({ username: uniqueName('count') })).options.allowCredentials.length)
    }
    expect([...counts].sort()).toEqual([1, 2, 3])
  })

  it('refuses a malformed body with 400', async () => {
    for (const body of [{ username: '' }, { username: 5 }, { username: 'x'.repeat(255) }, '{"username":']) {
      const res = await api('POST', '/auth/passkeys/login/options', body)
      expect(res.status, JSON.stringify(body)).toBe(400)
    }
  })
})

describe('POST /auth/passkeys/login', () => {
  it.for<KeyKind>(['ES256', 'Ed25519', 'RS256'])(
    'signs in usernameless with a %s passkey: the token pair of /auth/token',
    async (kind) => {
      const { user, authenticator, passkey } = await userWithPasskey({ kind })
      const res = await passkeySignIn(authenticator)
      expect(res.status, await res.clone().text()).toBe(200)
      const pair = (await res.json()) as TokenPair
      const byPassword = await login(user)
      expect(Object.keys(pair).sort()).toEqual(Object.keys(byPassword).sort())
      expect(decodeJwt(pair.access_token).payload.sub).toBe(String(user.id))
      expect((await me(pair.access_token)).id).toBe(user.id)
      const [used] = await listPasskeys(pair.access_token)
      expect(used).toEqual({ ...passkey, last_used_at: new Date(clock.now()).toISOString() })
      expect(await storedCounter(authenticator.credentialId)).toBe(authenticator.signCount)
    },
  )

  it('signs in for {username} with the credential it listed, with or without a user handle', async () => {
    const { user, authenticator } = await userWithPasskey()
    for (const userHandle of [undefined, null]) {
      const { challenge_id, options } = await loginOptions({ username: user.username })
      const res = await postLogin({ challenge_id, response: await authenticator.assert(options, { userHandle }) })
      expect(res.status, await res.clone().text()).toBe(200)
    }
  })

  it('sets the cookies of /auth/token?mode=cookie with ?mode=cookie', async () => {
    const { user, authenticator } = await userWithPasskey()
    const { challenge_id, options } = await loginOptions({})
    const res = await postLogin({ challenge_id, response: await authenticator.assert(options) }, '?mode=cookie')
    expect(res.status, await res.clone().text()).toBe(200)
    const byPassword = await api('POST', '/auth/token?mode=cookie', {
      username: user.username,
      password: user.password,
    })
    const cookieNames = (r: Response) =>
      (r.headers as Headers & { getSetCookie(): string[] }).getSetCookie().map((line) => line.split('=')[0])
    expect(cookieNames(res).sort()).toEqual(cookieNames(byPassword).sort())
    expect(cookieNames(res).length).toBeGreaterThan(0)
    expect(Object.keys((await res.json()) as object).sort()).toEqual(
      Object.keys((await byPassword.json()) as object).sort(),
    )
  })

  it('takes a synced passkey whose counter stays 0, time after time', async () => {
    const { authenticator } = await userWithPasskey({ counting: false, backedUp: true })
    for (let n = 0; n < 3; n += 1) expect((await passkeySignIn(authenticator)).status).toBe(200)
    expect(await storedCounter(authenticator.credentialId)).toBe(0)
  })

  /** One usernameless sign-in bent by `bend` (or the assertion changed by `change`): the answer. */
  const REFUSED: [string, (setup: Awaited<ReturnType<typeof userWithPasskey>>) => Promise<Response>][] = [
    ['a wrong origin', ({ authenticator }) => passkeySignIn(authenticator, { origin: 'https://evil.example' })],
    ['a wrong RP id', ({ authenticator }) => passkeySignIn(authenticator, { rpId: 'evil.example' })],
    ['a registration type', ({ authenticator }) => passkeySignIn(authenticator, { type: 'webauthn.create' })],
    ['no user presence', ({ authenticator }) => passkeySignIn(authenticator, { userPresent: false })],
    [
      'another challenge than the one issued',
      ({ authenticator }) => passkeySignIn(authenticator, { challenge: base64Url(new Uint8Array(32).fill(7)) }),
    ],
    [
      'a signature by another key',
      async ({ authenticator }) => passkeySignIn(authenticator, { signWith: await authenticator.otherKey() }),
    ],
    [
      'a counter that goes backwards',
      async ({ authenticator }) => {
        expect((await passkeySignIn(authenticator, { signCount: 10 })).status).toBe(200)
        return passkeySignIn(authenticator, { signCount: 9 })
      },
    ],
    [
      'a counter that stays put',
      async ({ authenticator }) => {
        expect((await passkeySignIn(authenticator, { signCount: 10 })).status).toBe(200)
        return passkeySignIn(authenticator, { signCount: 10 })
      },
    ],
    ['an unknown credential', async () => passkeySignIn(await SoftAuthenticator.create())],
    ['another user handle', ({ authenticator }) => passkeySignIn(authenticator, { userHandle: 'c29tZW9uZS1lbHNl' })],
    ['no user handle, usernameless', ({ authenticator }) => passkeySignIn(authenticator, { userHandle: null })],
    [
      'backed up (BS) but not eligible (BE)',
      ({ authenticator }) => passkeySignIn(authenticator, { backedUp: false, extraFlags: 0x10 }),
    ],
    [
      'a replayed challenge',
      async ({ authenticator }) => {
        const { challenge_id, options } = await loginOptions({})
        expect((await postLogin({ challenge_id, response: await authenticator.assert(options) })).status).toBe(200)
        return postLogin({ challenge_id, response: await authenticator.assert(options) })
      },
    ],
    [
      'an expired challenge',
      async ({ authenticator }) => {
        const { challenge_id, options } = await loginOptions({})
        advance(CHALLENGE_TTL_MS)
        return postLogin({ challenge_id, response: await authenticator.assert(options) })
      },
    ],
    [
      "a challenge issued for another user's username",
      async ({ authenticator }) => {
        const other = await registerUser()
        const { challenge_id, options } = await loginOptions({ username: other.username })
        return postLogin({ challenge_id, response: await authenticator.assert(options) })
      },
    ],
    [
      'a registration challenge',
      async ({ authenticator, tokens }) => {
        const { challenge_id, options } = await registrationOptions(tokens.access_token)
        return postLogin({ challenge_id, response: await authenticator.assert(options) })
      },
    ],
    [
      'an unknown challenge id',
      async ({ authenticator }) => {
        const { options } = await loginOptions({})
        return postLogin({ challenge_id: 'made-up', response: await authenticator.assert(options) })
      },
    ],
    [
      'authenticator data that is not',
      async ({ authenticator }) => {
        const { challenge_id, options } = await loginOptions({})
        const response = await authenticator.assert(options)
        return postLogin({
          challenge_id,
          response: { ...response, response: { ...response.response, authenticatorData: 'AAAA' } },
        })
      },
    ],
  ]

  it('refuses every failed check with the one 401 invalid_credentials, and signs nobody in', async () => {
    const details = new Set<string>()
    for (const [cause, attempt] of REFUSED) {
      const setup = await userWithPasskey()
      const res = await attempt(setup)
      expect((res.headers as Headers & { getSetCookie(): string[] }).getSetCookie(), cause).toEqual([])
      const problem = await expectProblem(res, 401, 'invalid_credentials').catch((err: Error) => {
        throw new Error(`${cause}: ${err.message}`)
      })
      const { request_id: _requestId, ...same } = problem as typeof problem & { request_id: string }
      details.add(JSON.stringify(same))
      // The real thing still works after the refusal.
      expect((await passkeySignIn(setup.authenticator, { signCount: 1000 })).status, cause).toBe(200)
    }
    expect(details.size).toBe(1)
  })

  it('lets only one of two sign-ins reporting the same counter through (compare-and-set)', async () => {
    const { authenticator } = await userWithPasskey()
    const [first, second] = await Promise.all([loginOptions({}), loginOptions({})])
    const assertions = [
      await authenticator.assert(first!.options, { signCount: 5 }),
      await authenticator.assert(second!.options, { signCount: 5 }),
    ]
    const answers = await Promise.all([
      postLogin({ challenge_id: first!.challenge_id, response: assertions[0] }),
      postLogin({ challenge_id: second!.challenge_id, response: assertions[1] }),
    ])
    expect(answers.map((res) => res.status).sort()).toEqual([200, 401])
    expect(await storedCounter(authenticator.credentialId)).toBe(5)
  })

  describe('with TOTP on', () => {
    it('a verified user (UV) is both factors: signed in, no mfa_required', async () => {
      const { tokens, authenticator } = await userWithPasskey()
      await enrolTotp(tokens)
      const res = await passkeySignIn(authenticator, { userVerified: true })
      expect(res.status, await res.clone().text()).toBe(200)
    })

    it('without UV answers mfa_required as the password step does; the code then signs in', async () => {
      const { user, tokens, authenticator } = await userWithPasskey()
      const secret = await enrolTotp(tokens)
      const res = await passkeySignIn(authenticator, { userVerified: false, signCount: 7 })
      const problem = (await expectProblem(res, 401, 'mfa_required')) as unknown as { mfa_token: string }
      const byPassword = await api('POST', '/auth/token', { username: user.username, password: user.password })
      const passwordProblem = (await expectProblem(byPassword, 401, 'mfa_required')) as unknown as Record<
        string,
        unknown
      >
      expect(Object.keys(problem).sort()).toEqual(Object.keys(passwordProblem).sort())
      // The counter is kept even though the sign-in is not finished.
      expect(await storedCounter(authenticator.credentialId)).toBe(7)
      const verified = await api('POST', '/auth/mfa/verify', { mfa_token: problem.mfa_token, code: totpCodeAt(secret) })
      expect(verified.status, await verified.clone().text()).toBe(200)
    })

    it('refuses a UV flag flipped on after signing: the signature no longer holds', async () => {
      const { tokens, authenticator } = await userWithPasskey()
      await enrolTotp(tokens)
      const { challenge_id, options } = await loginOptions({})
      const response = await authenticator.assert(options, { userVerified: false })
      const data = bytesOf(response.response.authenticatorData)
      data[32] = (data[32] ?? 0) | 0x04
      const flipped = { ...response, response: { ...response.response, authenticatorData: base64Url(data) } }
      await expectProblem(await postLogin({ challenge_id, response: flipped }), 401, 'invalid_credentials')
    })
  })
})

describe('managing passkeys', () => {
  it('lists them oldest first, renames one, and keeps another user out (404)', async () => {
    const { tokens, passkey } = await userWithPasskey()
    advance(1000)
    const second = await registerPasskey(tokens.access_token, await SoftAuthenticator.create({ kind: 'Ed25519' }))
    expect((await listPasskeys(tokens.access_token)).map((row) => row.id)).toEqual([passkey.id, second.id])

    const renamed = await api('PATCH', `/auth/passkeys/${passkey.id}`, { name: ' YubiKey ' }, tokens.access_token)
    expect(renamed.status).toBe(200)
    expect(await renamed.json()).toEqual({ ...passkey, name: 'YubiKey' })

    for (const name of ['', '   ', 'x'.repeat(65)]) {
      await expectProblem(
        await api('PATCH', `/auth/passkeys/${passkey.id}`, { name }, tokens.access_token),
        400,
        'validation_failed',
      )
    }
    const other = await registerAndLogin()
    for (const [method, body] of [
      ['PATCH', { name: 'mine now' }],
      ['DELETE', undefined],
    ] as const) {
      await expectProblem(
        await api(method, `/auth/passkeys/${passkey.id}`, body, other.tokens.access_token),
        404,
        'not_found',
      )
      await expectProblem(await api(method, '/auth/passkeys/999999999', body, tokens.access_token), 404, 'not_found')
    }
    expect((await listPasskeys(tokens.access_token))[0]?.name).toBe('YubiKey')
    await expectProblem(await api('GET', '/auth/passkeys'), 401, 'not_authenticated')
  })

  it('removes one (204), tells the owner, and the passkey no longer signs in', async () => {
    const { user, tokens, authenticator, passkey } = await userWithPasskey()
    const res = await api('DELETE', `/auth/passkeys/${passkey.id}`, undefined, tokens.access_token)
    expect(res.status).toBe(204)
    expect(await subjectsTo(user.email)).toContain(SUBJECTS.removed)
    expect(await listPasskeys(tokens.access_token)).toEqual([])
    expect((await me(tokens.access_token)).passkeys).toBe(0)
    await expectProblem(await passkeySignIn(authenticator), 401, 'invalid_credentials')
  })

  it('removes a passkey once when two requests remove it together: 204, then 404', async () => {
    const { tokens, passkey } = await userWithPasskey()
    const answers = await Promise.all(
      [1, 2].map(() => api('DELETE', `/auth/passkeys/${passkey.id}`, undefined, tokens.access_token)),
    )
    expect(answers.map((res) => res.status).sort()).toEqual([204, 404])
  })

  it('keeps the last way to sign in: an account without a password nor a provider keeps its last passkey', async () => {
    // A provider account: no password; with a passkey, the provider can go, then not the passkey.
    const { pair, id } = await providerAccount()
    const first = await registerPasskey(pair.access_token, await SoftAuthenticator.create())
    const second = await registerPasskey(pair.access_token, await SoftAuthenticator.create())
    expect((await api('DELETE', `/auth/passkeys/${first.id}`, undefined, pair.access_token)).status).toBe(204)
    const unlinked = await api('DELETE', '/auth/oidc/google/link', undefined, pair.access_token)
    expect(unlinked.status, await unlinked.clone().text()).toBe(204)
    await expectProblem(
      await api('DELETE', `/auth/passkeys/${second.id}`, undefined, pair.access_token),
      409,
      'conflict',
    )
    expect((await listPasskeys(pair.access_token)).map((row) => row.id)).toEqual([second.id])
    const { results } = await env.DB.prepare('SELECT id FROM passkeys WHERE user_id = ?').bind(id).all()
    expect(results).toHaveLength(1)
  })
})

describe('POST /auth/reauthenticate with a passkey', () => {
  it("renews the session's auth_time with the user's own passkey, not another's", async () => {
    const { tokens, authenticator } = await userWithPasskey()
    advance(REAUTH_MAX_AGE_MS + STEP_MS)
    const refreshed = await api('POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token })
    const aged = (await refreshed.json()) as TokenPair

    const other = await userWithPasskey()
    const foreign = await loginOptions({})
    await expectProblem(
      await api(
        'POST',
        '/auth/reauthenticate',
        {
          passkey: { challenge_id: foreign.challenge_id, response: await other.authenticator.assert(foreign.options) },
        },
        aged.access_token,
      ),
      401,
      'invalid_credentials',
    )

    const { challenge_id, options } = await loginOptions({})
    const response = await authenticator.assert(options)
    await expectProblem(
      await api(
        'POST',
        '/auth/reauthenticate',
        { password: 'x', passkey: { challenge_id, response } },
        aged.access_token,
      ),
      400,
      'validation_failed',
    )
    const res = await api('POST', '/auth/reauthenticate', { passkey: { challenge_id, response } }, aged.access_token)
    expect(res.status, await res.clone().text()).toBe(200)
    const renewed = (await res.json()) as TokenPair
    expect(decodeJwt(renewed.access_token).payload.auth_time).toBe(Math.floor(clock.now() / 1000))
    await registrationOptions(renewed.access_token)
  })
})

describe('the cron', () => {
  it('prunes challenges once they expire, and keeps live ones', async () => {
    const expired = await loginOptions({})
    advance(CHALLENGE_TTL_MS - 1000)
    const live = await loginOptions({})
    advance(2000)
    await runScheduledMaintenance(env, new Date())
    const stored = async (id: string) =>
      (await env.DB.prepare('SELECT id FROM passkey_challenges WHERE id = ?').bind(id).first()) !== null
    expect(await stored(expired.challenge_id)).toBe(false)
    expect(await stored(live.challenge_id)).toBe(true)
  })
})

describe('the association files', () => {
  const appEnv = {
    ...env,
    APPLE_APP_IDS: 'ABCDE12345.com.example.blog, ABCDE12345.com.example.blog.beta',
    ANDROID_APPS: JSON.stringify([
      { package_name: 'com.example.blog', sha256_cert_fingerprints: [Array(32).fill('AB').join(':')] },
    ]),
  }

  it('answer 404 when their variable is unset', async () => {
    for (const path of ['/.well-known/apple-app-site-association', '/.well-known/assetlinks.json']) {
      expect((await api('GET', path)).status, path).toBe(404)
    }
  })

  it('list the iOS apps (webcredentials) and the Android apps (get_login_creds)', async () => {
    const apple = await fetchWorker('https://edgepress.test/.well-known/apple-app-site-association', {}, appEnv)
    expect(apple.status).toBe(200)
    expect(apple.headers.get('content-type')).toMatch(/^application\/json/)
    expect(apple.headers.get('cache-control')).toContain('max-age=3600')
    expect(await apple.json()).toEqual({
      webcredentials: { apps: ['ABCDE12345.com.example.blog', 'ABCDE12345.com.example.blog.beta'] },
    })
    const android = await fetchWorker('https://edgepress.test/.well-known/assetlinks.json', {}, appEnv)
    expect(android.status).toBe(200)
    expect(await android.json()).toEqual([
      {
        relation: ['delegate_permission/common.get_login_creds'],
        target: {
          namespace: 'android_app',
          package_name: 'com.example.blog',
          sha256_cert_fingerprints: [Array(32).fill('AB').join(':')],
        },
      },
    ])
  })
})

describe('a passkey configured for an Android app and a web origin under the RP id', () => {
  const ANDROID_ORIGIN = `android:apk-key-hash:${base64Url(new Uint8Array(32).fill(9))}`
  const appEnv = {
    ...env,
    WEBAUTHN_RP_ID: 'example.com',
    WEBAUTHN_ORIGINS: `https://app.example.com,${ANDROID_ORIGIN}`,
  }

  async function call(method: string, path: string, body?: unknown, token?: string): Promise<Response> {
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    return fetchWorker(
      `https://edgepress.test/api/v1${path}`,
      {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      },
      appEnv,
    )
  }

  it('registers from the app and signs in from the web origin', async () => {
    const { tokens } = await registerAndLogin()
    const fromApp = await SoftAuthenticator.create({ rpId: 'example.com', origin: ANDROID_ORIGIN })
    const started = (await (
      await call('POST', '/auth/passkeys/register/options', undefined, tokens.access_token)
    ).json()) as {
      challenge_id: string
      options: CreationOptions
    }
    expect(started.options.rp.id).toBe('example.com')
    const created = await call(
      'POST',
      '/auth/passkeys/register',
      { challenge_id: started.challenge_id, response: await fromApp.register(started.options) },
      tokens.access_token,
    )
    expect(created.status, await created.clone().text()).toBe(201)

    const signIn = (await (await call('POST', '/auth/passkeys/login/options', {})).json()) as {
      challenge_id: string
      options: RequestOptions
    }
    expect(signIn.options.rpId).toBe('example.com')
    const fromWeb = await fromApp.assert(signIn.options, { origin: 'https://app.example.com' })
    const res = await call('POST', '/auth/passkeys/login', { challenge_id: signIn.challenge_id, response: fromWeb })
    expect(res.status, await res.clone().text()).toBe(200)

    // The default origin is not among them any more.
    const again = (await (await call('POST', '/auth/passkeys/login/options', {})).json()) as {
      challenge_id: string
      options: RequestOptions
    }
    const stray = await fromApp.assert(again.options, { origin: 'http://localhost:8787' })
    expect(
      (await call('POST', '/auth/passkeys/login', { challenge_id: again.challenge_id, response: stray })).status,
    ).toBe(401)
  })
})
