import { env } from 'cloudflare:workers'
import { SignJWT } from 'jose'
import { Secret, TOTP } from 'otpauth'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  api,
  apiWithEnv,
  expectProblem,
  login,
  registerAndLogin,
  registerUser,
  uniqueName,
} from '../../../test/helpers'
import type { TokenPair } from '../../../test/helpers'
import {
  PROVIDER_ORIGIN,
  TEST_PROVIDERS,
  jwksFetches,
  providerControl,
  publicJwk,
  sha256HexOf,
  signIdToken,
} from '../../../test/oidc-provider'
import type { IdTokenOptions } from '../../../test/oidc-provider'

const GENERIC = 'The ID token is invalid.'

/** An Apple ID token: RS256, nonce = SHA-256 hex of the raw nonce, email_verified as a string. */
async function appleToken(
  overrides: Partial<IdTokenOptions> & { rawNonce?: string } = {},
): Promise<{ id_token: string; nonce: string; sub: string; email: string }> {
  const nonce = overrides.rawNonce ?? crypto.randomUUID()
  const sub = overrides.sub ?? `000123.${crypto.randomUUID().replaceAll('-', '')}.0042`
  const email = overrides.email ?? `${uniqueName('relay').replaceAll('_', '')}@privaterelay.appleid.com`
  const id_token = await signIdToken({
    kid: 'apple-1',
    iss: TEST_PROVIDERS.apple.issuers[0],
    aud: TEST_PROVIDERS.apple.audiences[0],
    email_verified: 'true',
    nonce: await sha256HexOf(nonce),
    claims: { is_private_email: 'true' },
    ...overrides,
    sub,
    email,
  })
  return { id_token, nonce, sub, email }
}

/** A Google ID token: nonce as sent, email_verified a boolean. */
async function googleToken(
  overrides: Partial<IdTokenOptions> = {},
): Promise<{ id_token: string; nonce: string; sub: string; email: string }> {
  const nonce = overrides.nonce ?? crypto.randomUUID()
  const sub = overrides.sub ?? String(100_000_000 + Math.floor(Math.random() * 1e9))
  const email = overrides.email ?? `${uniqueName('g')}@gmail.com`
  const id_token = await signIdToken({
    kid: 'google-1',
    iss: 'https://accounts.google.com',
    aud: TEST_PROVIDERS.google.audiences[0],
    email_verified: true,
    ...overrides,
    nonce,
    sub,
    email,
  })
  return { id_token, nonce, sub, email }
}

const signIn = (
  provider: string,
  body: { id_token: string; nonce?: string },
  query = '',
  headers: Record<string, string> = {},
) =>
  api(
    'POST',
    `/auth/oidc/${provider}${query}`,
    { id_token: body.id_token, ...(body.nonce === undefined ? {} : { nonce: body.nonce }) },
    undefined,
    headers,
  )

async function me(
  accessToken: string,
): Promise<{ id: number; username: string; email: string; email_verified: boolean; providers: string[] }> {
  const res = await api('GET', '/users/me', undefined, accessToken)
  expect(res.status).toBe(200)
  return res.json()
}

async function expectInvalid(res: Response): Promise<void> {
  const problem = await expectProblem(res, 401, 'token_invalid')
  expect(problem.detail).toBe(GENERIC)
  expect(res.headers.get('www-authenticate')).toBe(
    `Bearer realm="api", error="invalid_token", error_description="${GENERIC}"`,
  )
}

beforeAll(async () => {
  await providerControl('reset')
})

describe('POST /auth/oidc/{provider}: sign in', () => {
  it('creates an account on the first Sign in with Apple, then signs in to it: 200 both times, as /auth/token', async () => {
    const first = await appleToken()
    const created = await signIn('apple', first)
    expect(created.status, await created.clone().text()).toBe(200)
    const pair = (await created.json()) as TokenPair
    expect(pair.token_type).toBe('Bearer')
    expect(created.headers.get('cache-control')).toContain('no-store')
    const account = await me(pair.access_token)
    expect(account).toMatchObject({ email: first.email, email_verified: true, providers: ['apple'] })
    expect(first.email.startsWith(account.username.replace(/\d{4}$/, ''))).toBe(true)

    const again = await appleToken({ sub: first.sub, email: first.email })
    const signedIn = await signIn('apple', again)
    expect(signedIn.status).toBe(200)
    expect((await me(((await signedIn.json()) as TokenPair).access_token)).id).toBe(account.id)
  })

  it('accepts Google tokens (plain nonce, boolean email_verified, either issuer spelling, RS256 or ES256)', async () => {
    const token = await googleToken({ iss: 'accounts.google.com' })
    const res = await signIn('google', token)
    expect(res.status).toBe(200)
    const account = await me(((await res.json()) as TokenPair).access_token)
    expect(account.providers).toEqual(['google'])
    const es = await googleToken({
      kid: 'google-es-1',
      sub: token.sub,
      email: token.email,
      aud: TEST_PROVIDERS.google.audiences[1],
    })
    const again = await signIn('google', es)
    expect(again.status).toBe(200)
    expect((await me(((await again.json()) as TokenPair).access_token)).id).toBe(account.id)
  })

  it('gives a new account a free, valid username derived from the email', async () => {
    const taken = await registerUser()
    const token = await googleToken({ email: `${taken.username}@gmail.com` })
    const res = await signIn('google', token)
    expect(res.status).toBe(200)
    const account = await me(((await res.json()) as TokenPair).access_token)
    expect(account.username).toMatch(new RegExp(`^${taken.username}\\d{4}$`))
    const odd = await signIn(
      'google',
      await googleToken({ email: `${uniqueName('x').replaceAll('_', '')}+é!@gmail.com`.replace(/^x\d+/, '!') }),
    )
    expect(odd.status).toBe(200)
    expect((await me(((await odd.json()) as TokenPair).access_token)).username).toMatch(/^[A-Za-z0-9._-]{3,}$/)
  })

  it('answers one generic 401 token_invalid to every problem with the token', async () => {
    const now = Math.floor(Date.now() / 1000)
    const base = await appleToken()
    const cases: [string, Promise<{ id_token: string; nonce?: string }>][] = [
      ['another audience', appleToken({ aud: 'com.attacker.app' })],
      ['another issuer', appleToken({ iss: 'https://accounts.google.com' })],
      ['expired', appleToken({ iat: now - 1200, exp: now - 600 })],
      ['issued too long ago', appleToken({ iat: now - 7200, exp: now + 600 })],
      ['issued in the future', appleToken({ iat: now + 600, exp: now + 1200 })],
      ['signed by another key under a known kid', appleToken({ kid: 'stranger-1', header: { kid: 'apple-1' } })],
      ['a key of another provider', appleToken({ kid: 'google-1' })],
      ['wrong nonce', Promise.resolve({ id_token: base.id_token, nonce: 'another nonce' })],
      ['no nonce sent', Promise.resolve({ id_token: base.id_token })],
      [
        'the hashed nonce sent as the raw one',
        sha256HexOf(base.nonce).then((hashed) => ({ id_token: base.id_token, nonce: hashed })),
      ],
      ['a token without a nonce', appleToken({ claims: { nonce: undefined } })],
      ['tampered payload', Promise.resolve({ id_token: tamper(base.id_token), nonce: base.nonce })],
      ['alg none', Promise.resolve({ id_token: unsigned(base.id_token), nonce: base.nonce })],
      [
        'HS256 keyed with the public key',
        hs256WithPublicKey(base.id_token).then((id_token) => ({ id_token, nonce: base.nonce })),
      ],
      ['not a JWT', Promise.resolve({ id_token: 'not.a.jwt', nonce: base.nonce })],
    ]
    for (const [label, body] of cases) {
      const res = await signIn('apple', await body)
      expect(res.status, label).toBe(401)
      await expectInvalid(res)
    }
    await expectInvalid(await signIn('facebook', base))
    await expectInvalid(await signIn('__proto__', base))
    // Nothing was created by any of them.
    const { results } = await env.DB.prepare('SELECT count(*) AS n FROM users WHERE email = ?')
      .bind(base.email)
      .all<{ n: number }>()
    expect(results[0]!.n).toBe(0)
  })

  it('links an existing account by email only when both the provider and the account have verified it', async () => {
    const user = await registerUser()
    const identities = () =>
      env.DB.prepare('SELECT count(*) AS n FROM external_identities WHERE user_id = ?')
        .bind(user.id)
        .first<{ n: number }>()
    // The account's address is not verified: 409, nothing linked.
    await expectProblem(
      await signIn('google', await googleToken({ email: user.email.toUpperCase() })),
      409,
      'account_exists',
    )
    expect((await identities())!.n).toBe(0)
    await env.DB.prepare('UPDATE users SET email_verified = 1 WHERE id = ?').bind(user.id).run()
    // The provider does not vouch for the address: 409, nothing linked.
    await expectProblem(
      await signIn('google', await googleToken({ email: user.email, email_verified: false })),
      409,
      'account_exists',
    )
    expect((await identities())!.n).toBe(0)
    // Google vouches for an address outside Gmail only with a Workspace domain (`hd`).
    await expectProblem(await signIn('google', await googleToken({ email: user.email })), 409, 'account_exists')
    expect((await identities())!.n).toBe(0)
    // Both verified: linked, and signed in to that account.
    const linked = await signIn('google', await googleToken({ email: user.email, claims: { hd: 'example.com' } }))
    expect(linked.status).toBe(200)
    const pair = (await linked.json()) as TokenPair
    expect(await me(pair.access_token)).toMatchObject({ id: user.id, providers: ['google'] })
  })

  it('creates an account whose email is verified only when the provider says so', async () => {
    const unverified = await appleToken({ email_verified: 'false' })
    const created = await signIn('apple', unverified)
    expect(created.status).toBe(200)
    const pair = (await created.json()) as TokenPair
    expect(await me(pair.access_token)).toMatchObject({
      email: unverified.email,
      email_verified: false,
      providers: ['apple'],
    })
    const verified = await googleToken({ email_verified: true })
    const second = (await (await signIn('google', verified)).json()) as TokenPair
    expect(await me(second.access_token)).toMatchObject({ email_verified: true })
  })

  it('an account created by a provider has no password: password login answers the usual 401', async () => {
    const token = await googleToken()
    expect((await signIn('google', token)).status).toBe(200)
    for (const password of ['!oidc', '', 'correct horse battery staple']) {
      const res = await api('POST', '/auth/token', { username: token.email, password: password || 'x' })
      await expectProblem(res, 401, 'invalid_credentials')
    }
  })

  it('asks for the second factor exactly as the password step does', async () => {
    const token = await googleToken()
    const pair = (await (await signIn('google', token)).json()) as TokenPair
    const started = await api('POST', '/auth/mfa/totp', undefined, pair.access_token)
    const { secret } = (await started.json()) as { secret: string }
    const code = (offset: number) =>
      new TOTP({ secret: Secret.fromBase32(secret), period: 30, digits: 6, algorithm: 'SHA1' }).generate({
        timestamp: Date.now() + offset * 30_000,
      })
    expect((await api('POST', '/auth/mfa/totp/confirm', { code: code(-1) }, pair.access_token)).status).toBe(200)
    const res = await signIn('google', await googleToken({ sub: token.sub, email: token.email }))
    const problem = (await expectProblem(res, 401, 'mfa_required')) as unknown as { mfa_token: string }
    expect(typeof problem.mfa_token).toBe('string')
    const verified = await api('POST', '/auth/mfa/verify', { mfa_token: problem.mfa_token, code: code(0) })
    expect(verified.status).toBe(200)
  })

  it('sets the session cookies in cookie mode, from an allowed origin', async () => {
    const res = await signIn('google', await googleToken(), '?mode=cookie', { origin: 'https://app.example.com' })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { token_type: string }).token_type).toBe('Cookie')
    expect(res.headers.get('set-cookie')).toContain('__Host-')
  })

  it('answers 503 with Retry-After, never 500, when the provider’s keys cannot be fetched', async () => {
    for (const provider of ['down', 'garbled'] as const) {
      const id_token = await signIdToken({
        kid: 'apple-1',
        iss: TEST_PROVIDERS[provider].issuers[0],
        aud: TEST_PROVIDERS[provider].audiences[0],
        sub: '1',
        nonce: 'n',
      })
      const res = await signIn(provider, { id_token, nonce: 'n' })
      await expectProblem(res, 503, 'service_unavailable')
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0)
    }
  })

  it('caches the key set, fetches it again for a new kid, and not for every made-up kid', async () => {
    const token = (kid: string, header: Record<string, unknown> = {}) =>
      signIdToken({
        kid,
        iss: TEST_PROVIDERS.rotating.issuers[0],
        aud: 'rotating-client',
        sub: 'rotating-user',
        email: `${uniqueName('rot')}@example.com`,
        email_verified: true,
        nonce: 'n',
        header,
      })
    const before = await jwksFetches('/rotating/keys')
    expect([200]).toContain((await signIn('rotating', { id_token: await token('rotating-1'), nonce: 'n' })).status)
    expect((await signIn('rotating', { id_token: await token('rotating-1'), nonce: 'n' })).status).toBe(200)
    expect((await jwksFetches('/rotating/keys')) - before).toBeLessThanOrEqual(1)

    await providerControl('rotate')
    expect((await signIn('rotating', { id_token: await token('rotating-2'), nonce: 'n' })).status).toBe(200)
    const afterRotation = await jwksFetches('/rotating/keys')
    await expectInvalid(
      await signIn('rotating', { id_token: await token('stranger-1', { kid: 'made-up' }), nonce: 'n' }),
    )
    await expectInvalid(
      await signIn('rotating', { id_token: await token('stranger-1', { kid: 'made-up-2' }), nonce: 'n' }),
    )
    expect(await jwksFetches('/rotating/keys')).toBe(afterRotation)
  })

  it('refuses a malformed OIDC_PROVIDERS with a 500 naming it, never its value', async () => {
    const broken = { ...env, OIDC_PROVIDERS: '{"apple": {"issuers": ["secret-looking-value""' }
    const res = await apiWithEnv(broken, 'POST', '/auth/oidc/apple', { id_token: 'x.y.z' })
    const problem = await expectProblem(res, 500, 'internal_error')
    expect(problem.detail).toContain('OIDC_PROVIDERS')
    expect(problem.detail).not.toContain('secret-looking-value')
    const insecure = {
      ...env,
      OIDC_PROVIDERS: JSON.stringify({ apple: { ...TEST_PROVIDERS.apple, jwks_uri: 'http://keys.example/apple' } }),
    }
    expect(
      (
        await expectProblem(
          await apiWithEnv(insecure, 'POST', '/auth/oidc/apple', { id_token: 'x.y.z' }),
          500,
          'internal_error',
        )
      ).detail,
    ).toContain('OIDC_PROVIDERS')
  })
})

describe('linking and unlinking providers', () => {
  it('links a provider to a signed-in account, which then signs in with it', async () => {
    const { user, tokens } = await registerAndLogin()
    const google = await googleToken({ email: `${uniqueName('other')}@gmail.com` })
    const linked = await api(
      'POST',
      '/auth/oidc/google/link',
      { id_token: google.id_token, nonce: google.nonce },
      tokens.access_token,
    )
    expect(linked.status, await linked.clone().text()).toBe(204)
    expect((await me(tokens.access_token)).providers).toEqual(['google'])
    const again = await googleToken({ sub: google.sub, email: google.email })
    expect(
      (
        await api(
          'POST',
          '/auth/oidc/google/link',
          { id_token: again.id_token, nonce: again.nonce },
          tokens.access_token,
        )
      ).status,
    ).toBe(204)

    const res = await signIn('google', await googleToken({ sub: google.sub, email: google.email }))
    expect(res.status).toBe(200)
    expect((await me(((await res.json()) as TokenPair).access_token)).id).toBe(user.id)
  })

  it('refuses an identity linked elsewhere, a second one at the same provider, and a bad token', async () => {
    const first = await registerAndLogin()
    const second = await registerAndLogin()
    const google = await googleToken()
    expect(
      (
        await api(
          'POST',
          '/auth/oidc/google/link',
          { id_token: google.id_token, nonce: google.nonce },
          first.tokens.access_token,
        )
      ).status,
    ).toBe(204)
    const stolen = await googleToken({ sub: google.sub, email: google.email })
    await expectProblem(
      await api(
        'POST',
        '/auth/oidc/google/link',
        { id_token: stolen.id_token, nonce: stolen.nonce },
        second.tokens.access_token,
      ),
      409,
      'conflict',
    )
    const another = await googleToken()
    await expectProblem(
      await api(
        'POST',
        '/auth/oidc/google/link',
        { id_token: another.id_token, nonce: another.nonce },
        first.tokens.access_token,
      ),
      409,
      'conflict',
    )
    await expectInvalid(
      await api(
        'POST',
        '/auth/oidc/google/link',
        { id_token: another.id_token, nonce: 'wrong' },
        second.tokens.access_token,
      ),
    )
    await expectProblem(
      await api('POST', '/auth/oidc/google/link', { id_token: another.id_token, nonce: another.nonce }),
      401,
      'not_authenticated',
    )
  })

  it('unlinks, but never the last way to sign in', async () => {
    const apple = await appleToken()
    const pair = (await (await signIn('apple', apple)).json()) as TokenPair
    const unlink = (provider: string) => api('DELETE', `/auth/oidc/${provider}/link`, undefined, pair.access_token)
    await expectProblem(await unlink('apple'), 409, 'conflict')
    await expectProblem(await unlink('google'), 404, 'not_found')
    const google = await googleToken()
    expect(
      (
        await api(
          'POST',
          '/auth/oidc/google/link',
          { id_token: google.id_token, nonce: google.nonce },
          pair.access_token,
        )
      ).status,
    ).toBe(204)
    expect((await me(pair.access_token)).providers).toEqual(['apple', 'google'])
    expect((await unlink('apple')).status).toBe(204)
    await expectProblem(await unlink('google'), 409, 'conflict')
    expect((await me(pair.access_token)).providers).toEqual(['google'])
    // The unlinked Apple identity is a stranger again: its address is the account's, verified on both
    // sides, so signing in with it links it again.
    expect((await signIn('apple', await appleToken({ sub: apple.sub, email: apple.email }))).status).toBe(200)
    expect((await me(pair.access_token)).providers).toEqual(['apple', 'google'])
  })

  it('a user with a password may unlink their only provider', async () => {
    const { user, tokens } = await registerAndLogin()
    const google = await googleToken()
    expect(
      (
        await api(
          'POST',
          '/auth/oidc/google/link',
          { id_token: google.id_token, nonce: google.nonce },
          tokens.access_token,
        )
      ).status,
    ).toBe(204)
    expect((await api('DELETE', '/auth/oidc/google/link', undefined, tokens.access_token)).status).toBe(204)
    expect((await me(tokens.access_token)).providers).toEqual([])
    expect((await login(user)).token_type).toBe('Bearer')
  })
})

function tamper(jwt: string): string {
  const [header, payload, signature] = jwt.split('.')
  const claims = JSON.parse(atob(payload!.replace(/-/g, '+').replace(/_/g, '/'))) as Record<string, unknown>
  claims.sub = 'someone-else'
  const encoded = btoa(JSON.stringify(claims)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  return `${header}.${encoded}.${signature}`
}

/** Algorithm confusion: the same claims, HMAC-signed with the provider's public key as the secret. */
async function hs256WithPublicKey(jwt: string): Promise<string> {
  const [, payload] = jwt.split('.')
  const claims = JSON.parse(atob(payload!.replace(/-/g, '+').replace(/_/g, '/'))) as Record<string, unknown>
  const secret = new TextEncoder().encode(JSON.stringify(publicJwk('apple-1')))
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: 'apple-1', typ: 'JWT' }).sign(secret)
}

function unsigned(jwt: string): string {
  const [, payload] = jwt.split('.')
  const header = btoa(JSON.stringify({ alg: 'none', kid: 'apple-1' })).replace(/=+$/, '')
  return `${header}.${payload}.`
}

void PROVIDER_ORIGIN

// ---------------------------------------------------------------------------------------------
// Regression tests for the OIDC hardening: an ID token is accepted once, Google's email_verified
// counts only for Gmail and Workspace (hd), and concurrent links of one provider cannot both land.

type ProviderToken = { id_token: string; nonce: string; sub: string; email: string }

const link = (provider: string, token: ProviderToken, accessToken: string) =>
  api('POST', `/auth/oidc/${provider}/link`, { id_token: token.id_token, nonce: token.nonce }, accessToken)

const reauthenticate = (provider: string, token: ProviderToken, accessToken: string) =>
  api('POST', '/auth/reauthenticate', { provider, id_token: token.id_token, nonce: token.nonce }, accessToken)

async function identitiesOf(userId: number): Promise<{ provider: string; sub: string }[]> {
  const { results } = await env.DB.prepare(
    'SELECT provider, sub FROM external_identities WHERE user_id = ? ORDER BY provider, sub',
  )
    .bind(userId)
    .all<{ provider: string; sub: string }>()
  return results
}

/** A registered user whose address is verified (as after the emailed link). */
async function verifiedUser(email: string) {
  const user = await registerUser({ email })
  await env.DB.prepare('UPDATE users SET email_verified = 1 WHERE id = ?').bind(user.id).run()
  return user
}

describe('an ID token is accepted once', () => {
  it('a second sign-in with the same token is refused with the generic 401; a new token of the identity signs in', async () => {
    const token = await googleToken()
    const first = await signIn('google', token)
    expect(first.status).toBe(200)
    const account = await me(((await first.json()) as TokenPair).access_token)
    await expectInvalid(await signIn('google', token))
    await expectInvalid(await signIn('google', token, '?mode=cookie', { origin: 'https://app.example.com' }))

    const fresh = await signIn('google', await googleToken({ sub: token.sub, email: token.email }))
    expect(fresh.status).toBe(200)
    expect((await me(((await fresh.json()) as TokenPair).access_token)).id).toBe(account.id)
  })

  it('the same holds for an Apple token (sign-in of an existing account)', async () => {
    const created = await appleToken()
    expect((await signIn('apple', created)).status).toBe(200)
    const again = await appleToken({ sub: created.sub, email: created.email })
    expect((await signIn('apple', again)).status).toBe(200)
    await expectInvalid(await signIn('apple', again))
  })

  it('a link spends it: the same token again is 401, not the 204 of an identity already linked', async () => {
    const { user, tokens } = await registerAndLogin()
    const google = await googleToken()
    expect((await link('google', google, tokens.access_token)).status).toBe(204)
    await expectInvalid(await link('google', google, tokens.access_token))
    // A new token of the same identity: already linked to this account, 204.
    expect(
      (await link('google', await googleToken({ sub: google.sub, email: google.email }), tokens.access_token)).status,
    ).toBe(204)
    expect(await identitiesOf(user.id)).toEqual([{ provider: 'google', sub: google.sub }])
  })

  it('a step-up spends it: POST /auth/reauthenticate with the same token twice is 401 the second time', async () => {
    const { tokens } = await registerAndLogin()
    const google = await googleToken()
    expect((await link('google', google, tokens.access_token)).status).toBe(204)
    const stepUp = await googleToken({ sub: google.sub, email: google.email })
    const first = await reauthenticate('google', stepUp, tokens.access_token)
    expect(first.status).toBe(200)
    const pair = (await first.json()) as TokenPair
    await expectInvalid(await reauthenticate('google', stepUp, pair.access_token))
    // The token the link spent is refused as well.
    await expectInvalid(await reauthenticate('google', google, pair.access_token))
  })

  it('a token spent by a sign-in is refused by a link and a step-up, whoever sends it', async () => {
    const token = await googleToken()
    const signedIn = await signIn('google', token)
    expect(signedIn.status).toBe(200)
    const owner = (await signedIn.json()) as TokenPair
    await expectInvalid(await reauthenticate('google', token, owner.access_token))
    const { user: other, tokens } = await registerAndLogin()
    await expectInvalid(await link('google', token, tokens.access_token))
    expect(await identitiesOf(other.id)).toEqual([])
  })

  it('of concurrent sign-ins with one token exactly one gets a session; the rest get the generic 401', async () => {
    const token = await googleToken()
    const answers = await Promise.all(Array.from({ length: 5 }, () => signIn('google', token)))
    expect(answers.map((res) => res.status).sort()).toEqual([200, 401, 401, 401, 401])
    for (const res of answers.filter((answer) => answer.status === 401)) await expectInvalid(res)
    const { results } = await env.DB.prepare('SELECT count(*) AS n FROM users WHERE email = ?')
      .bind(token.email)
      .all<{ n: number }>()
    expect(results[0]!.n).toBe(1)
  })

  it('is remembered by its hash until its own exp', async () => {
    const exp = Math.floor(Date.now() / 1000) + 420
    const token = await googleToken({ exp })
    expect((await signIn('google', token)).status).toBe(200)
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token.id_token)))
    const hash = btoa(String.fromCharCode(...digest))
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
      .replace(/=+$/, '')
    const row = await env.DB.prepare('SELECT token_hash, expires_at FROM spent_id_tokens WHERE token_hash = ?')
      .bind(hash)
      .first<{ token_hash: string; expires_at: number }>()
    expect(row).toEqual({ token_hash: hash, expires_at: exp * 1000 })
    // The token itself is not stored.
    const { results } = await env.DB.prepare('SELECT count(*) AS n FROM spent_id_tokens WHERE token_hash = ?')
      .bind(token.id_token)
      .all<{ n: number }>()
    expect(results[0]!.n).toBe(0)
  })
})

describe("Google's email_verified counts only for Gmail addresses and tokens with an hd claim", () => {
  it('does not auto-link someone@example.com without hd (409 account_exists); with hd it links', async () => {
    const user = await verifiedUser(`${uniqueName('someone')}@example.com`)
    const plain = await signIn('google', await googleToken({ email: user.email, email_verified: true }))
    const problem = await expectProblem(plain, 409, 'account_exists')
    expect(problem.detail).toContain('google')
    expect(await identitiesOf(user.id)).toEqual([])
    await expectProblem(
      await signIn('google', await googleToken({ email: user.email, claims: { hd: '' } })),
      409,
      'account_exists',
    )
    expect(await identitiesOf(user.id)).toEqual([])

    const workspace = await googleToken({ email: user.email, claims: { hd: 'example.com' } })
    const linked = await signIn('google', workspace)
    expect(linked.status).toBe(200)
    expect((await me(((await linked.json()) as TokenPair).access_token)).id).toBe(user.id)
    expect(await identitiesOf(user.id)).toEqual([{ provider: 'google', sub: workspace.sub }])
  })

  it('auto-links a Gmail address, whatever its case, without hd', async () => {
    const local = uniqueName('gm')
    const user = await verifiedUser(`${local}@gmail.com`)
    const token = await googleToken({ email: `${local}@GMail.COM` })
    const res = await signIn('google', token)
    expect(res.status).toBe(200)
    expect((await me(((await res.json()) as TokenPair).access_token)).id).toBe(user.id)
  })

  it('a new account from a non-Gmail Google token without hd has an unverified address; with hd, verified', async () => {
    const plain = await googleToken({ email: `${uniqueName('new')}@example.com` })
    const first = await signIn('google', plain)
    expect(first.status).toBe(200)
    expect(await me(((await first.json()) as TokenPair).access_token)).toMatchObject({
      email: plain.email,
      email_verified: false,
    })
    const added = await env.DB.prepare(
      'SELECT added_while_unverified FROM external_identities WHERE provider = ? AND sub = ?',
    )
      .bind('google', plain.sub)
      .first<{ added_while_unverified: number }>()
    expect(added!.added_while_unverified).toBe(1)

    const workspace = await googleToken({ email: `${uniqueName('new')}@example.com`, claims: { hd: 'example.com' } })
    const second = await signIn('google', workspace)
    expect(second.status).toBe(200)
    expect(await me(((await second.json()) as TokenPair).access_token)).toMatchObject({ email_verified: true })
  })

  it("takes another provider's word for any domain (Apple)", async () => {
    const user = await verifiedUser(`${uniqueName('apple')}@example.com`)
    const res = await signIn('apple', await appleToken({ email: user.email }))
    expect(res.status).toBe(200)
    expect((await me(((await res.json()) as TokenPair).access_token)).id).toBe(user.id)
  })
})

describe('concurrent links of one provider to one user', () => {
  it('of different Google identities: exactly one 204, the rest 409, one row', async () => {
    for (let round = 0; round < 3; round += 1) {
      const { user, tokens } = await registerAndLogin()
      const candidates = await Promise.all(Array.from({ length: 4 }, () => googleToken()))
      const answers = await Promise.all(candidates.map((candidate) => link('google', candidate, tokens.access_token)))
      expect(answers.map((res) => res.status).sort()).toEqual([204, 409, 409, 409])
      for (const res of answers.filter((answer) => answer.status === 409)) await expectProblem(res, 409, 'conflict')
      const winner = candidates[answers.findIndex((res) => res.status === 204)]!
      expect(await identitiesOf(user.id)).toEqual([{ provider: 'google', sub: winner.sub }])
      expect((await me(tokens.access_token)).providers).toEqual(['google'])
    }
  })
})
