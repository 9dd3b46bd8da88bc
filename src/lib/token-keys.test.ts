import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import {
  SignJWT,
  base64url,
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
} from 'jose'
import type { JWK } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import worker from '../index'
import { BASE_URL, expectProblem, mintToken, registerUser, uniqueName } from '../../test/helpers'
import type { RegisteredUser, TokenPair } from '../../test/helpers'

// EdDSA/ES256 signing through the real worker (docs/API.md § Authentication, precise point 1). Each
// configuration is its own env object, built once and reused: config and keys are memoised per
// env object, so a new object is exactly what a redeploy with new secrets looks like.

type AsymmetricAlg = 'EdDSA' | 'ES256'
type WorkerEnv = typeof env & { JWT_ALG?: string; JWT_PRIVATE_JWK?: string; JWT_PUBLIC_JWKS?: string }

interface SigningKey {
  kid: string
  privateJwk: JWK
  publicJwk: JWK
  privateKey: CryptoKey
}

interface Login {
  userId: number
  tokens: TokenPair
}

const OTHER_ALG: Record<AsymmetricAlg, AsymmetricAlg> = { EdDSA: 'ES256', ES256: 'EdDSA' }

async function signingKey(alg: AsymmetricAlg, kid = uniqueName(alg.toLowerCase())): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return {
    kid,
    privateKey,
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg },
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg },
  }
}

/** A worker env signing with `current` and accepting `accepted` (JWT_PUBLIC_JWKS). Build once per configuration. */
function asymmetricEnv(alg: AsymmetricAlg, current: SigningKey, accepted: SigningKey[] = [current]): WorkerEnv {
  return {
    ...env,
    JWT_ALG: alg,
    JWT_PRIVATE_JWK: JSON.stringify(current.privateJwk),
    JWT_PUBLIC_JWKS: JSON.stringify({ keys: accepted.map((key) => key.publicJwk) }),
  }
}

/** Calls the worker's fetch under `workerEnv` and lets its background work (email) finish. */
async function call(
  workerEnv: WorkerEnv,
  method: string,
  path: string,
  { body, token }: { body?: unknown; token?: string } = {},
): Promise<Response> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const request = new Request(`${BASE_URL}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const ctx = createExecutionContext()
  const res = await worker.fetch(request, workerEnv, ctx)
  await waitOnExecutionContext(ctx)
  return res
}

async function registerAndLoginWith(workerEnv: WorkerEnv): Promise<Login> {
  const username = uniqueName()
  const password = 'correct horse battery staple'
  const registered = await call(workerEnv, 'POST', '/api/v1/auth/register', {
    body: { username, email: `${username}@example.com`, password },
  })
  expect(registered.status).toBe(201)
  const { id } = (await registered.json()) as { id: number }
  return { userId: id, tokens: await loginWith(workerEnv, username, password) }
}

async function loginWith(workerEnv: WorkerEnv, username: string, password: string): Promise<TokenPair> {
  const res = await call(workerEnv, 'POST', '/api/v1/auth/token', { body: { username, password } })
  expect(res.status).toBe(200)
  return (await res.json()) as TokenPair
}

function me(workerEnv: WorkerEnv, token: string): Promise<Response> {
  return call(workerEnv, 'GET', '/api/v1/users/me', { token })
}

async function servedJwks(workerEnv: WorkerEnv): Promise<{ res: Response; jwks: { keys: JWK[] } }> {
  const res = await call(workerEnv, 'GET', '/.well-known/jwks.json')
  expect(res.status).toBe(200)
  return { res, jwks: (await res.json()) as { keys: JWK[] } }
}

/** Valid access-token claims for `sub`, as another service holding the key would mint them. */
function accessClaims(sub: number): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return {
    sub: String(sub),
    jti: crypto.randomUUID(),
    sid: crypto.randomUUID(),
    token_type: 'access',
    iat: now,
    nbf: now,
    exp: now + 300,
  }
}

function signWith(
  key: CryptoKey | Uint8Array,
  header: { alg: string; kid: string },
  claims: Record<string, unknown>,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ ...header, typ: 'JWT' }).sign(key)
}

/** 401 token_invalid with the RFC 6750 challenge: refused, and not by a 5xx. */
async function expectRefused(res: Response): Promise<void> {
  await expectProblem(res, 401, 'token_invalid')
  expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"')
}

describe.each(['EdDSA', 'ES256'] as const)('JWT_ALG=%s', (alg) => {
  describe('signing and publishing', () => {
    it('signs the tokens of a login with the configured alg and kid, and /users/me accepts them', async () => {
      const current = await signingKey(alg)
      const workerEnv = asymmetricEnv(alg, current)

      const { userId, tokens } = await registerAndLoginWith(workerEnv)

      expect(decodeProtectedHeader(tokens.access_token)).toEqual({ alg, typ: 'JWT', kid: current.kid })
      expect(decodeProtectedHeader(tokens.refresh_token)).toEqual({ alg, typ: 'JWT', kid: current.kid })
      const res = await me(workerEnv, tokens.access_token)
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({ id: userId })
    })

    it('publishes the current and previous public keys, never a private part, with a max-age', async () => {
      const current = await signingKey(alg)
      const previous = await signingKey(alg)
      const workerEnv = asymmetricEnv(alg, current, [current, previous])

      const { res, jwks } = await servedJwks(workerEnv)

      expect(res.headers.get('cache-control')).toMatch(/max-age=\d+/)
      expect(jwks.keys.map((jwk) => jwk.kid)).toEqual([current.kid, previous.kid])
      expect(jwks.keys[0]).toMatchObject({ kid: current.kid, kty: current.publicJwk.kty, x: current.publicJwk.x })
      expect(jwks.keys[1]).toMatchObject({ kid: previous.kid, kty: previous.publicJwk.kty, x: previous.publicJwk.x })
      for (const jwk of jwks.keys) expect(jwk).not.toHaveProperty('d')
      const text = JSON.stringify(jwks)
      expect(text).not.toContain(current.privateJwk.d)
      expect(text).not.toContain(previous.privateJwk.d)
    })

    it('lists the current key even when JWT_PUBLIC_JWKS omits it', async () => {
      const current = await signingKey(alg)
      const previous = await signingKey(alg)
      const workerEnv = asymmetricEnv(alg, current, [previous])

      const { jwks } = await servedJwks(workerEnv)

      expect(jwks.keys.map((jwk) => jwk.kid)).toEqual([current.kid, previous.kid])
    })

    it('issues access tokens that a client verifies with the served JWKS alone', async () => {
      const current = await signingKey(alg)
      const workerEnv = asymmetricEnv(alg, current)
      const { userId, tokens } = await registerAndLoginWith(workerEnv)
      const { jwks } = await servedJwks(workerEnv)

      const { payload, protectedHeader } = await jwtVerify(tokens.access_token, createLocalJWKSet(jwks), {
        algorithms: [alg],
        typ: 'JWT',
      })

      expect(protectedHeader).toMatchObject({ alg, kid: current.kid })
      expect(payload).toMatchObject({ sub: String(userId), token_type: 'access' })
    })
  })

  describe('key rotation', () => {
    it('keeps accepting a token of the previous key while it is listed, and signs new logins with the new key', async () => {
      const keyA = await signingKey(alg)
      const keyB = await signingKey(alg)
      const envA = asymmetricEnv(alg, keyA)
      const { userId, tokens: underA } = await registerAndLoginWith(envA)
      expect(decodeProtectedHeader(underA.access_token).kid).toBe(keyA.kid)
      const username = ((await (await me(envA, underA.access_token)).json()) as { username: string }).username

      const envRotated = asymmetricEnv(alg, keyB, [keyB, keyA])

      const old = await me(envRotated, underA.access_token)
      expect(old.status).toBe(200)
      expect(await old.json()).toMatchObject({ id: userId })
      const underB = await loginWith(envRotated, username, 'correct horse battery staple')
      expect(decodeProtectedHeader(underB.access_token)).toEqual({ alg, typ: 'JWT', kid: keyB.kid })
      expect((await me(envRotated, underB.access_token)).status).toBe(200)
      const { jwks } = await servedJwks(envRotated)
      expect(jwks.keys.map((jwk) => jwk.kid)).toEqual([keyB.kid, keyA.kid])
      await expect(jwtVerify(underA.access_token, createLocalJWKSet(jwks))).resolves.toBeDefined()
      await expect(jwtVerify(underB.access_token, createLocalJWKSet(jwks))).resolves.toBeDefined()
    })

    it('refuses a token of the previous key once it is dropped from JWT_PUBLIC_JWKS', async () => {
      const keyA = await signingKey(alg)
      const keyB = await signingKey(alg)
      const { tokens: underA } = await registerAndLoginWith(asymmetricEnv(alg, keyA))
      const envRetired = asymmetricEnv(alg, keyB, [keyB])
      const { tokens: underB } = await registerAndLoginWith(envRetired)

      await expectRefused(await me(envRetired, underA.access_token))

      expect((await me(envRetired, underB.access_token)).status).toBe(200)
      const { jwks } = await servedJwks(envRetired)
      expect(jwks.keys.map((jwk) => jwk.kid)).toEqual([keyB.kid])
    })
  })

  describe('Security: forged and confused tokens', () => {
    // One configuration for the whole suite; every forgery targets an existing user.
    let fixture: { current: SigningKey; workerEnv: WorkerEnv; user: RegisteredUser } | undefined
    beforeAll(async () => {
      const current = await signingKey(alg)
      fixture = { current, workerEnv: asymmetricEnv(alg, current), user: await registerUser() }
    })
    const setup = (): NonNullable<typeof fixture> => {
      if (fixture === undefined) throw new Error('beforeAll did not run')
      return fixture
    }

    it('accepts a token that the current key signed for the same claims (the refusals below are about the key)', async () => {
      const { current, workerEnv, user } = setup()
      const token = await signWith(current.privateKey, { alg, kid: current.kid }, accessClaims(user.id))
      expect((await me(workerEnv, token)).status).toBe(200)
    })

    it('refuses a token signed by the current key under a kid that is not in the set', async () => {
      const { current, workerEnv, user } = setup()
      const token = await signWith(current.privateKey, { alg, kid: 'no-such-kid' }, accessClaims(user.id))
      await expectRefused(await me(workerEnv, token))
    })

    it('refuses a token signed by an unknown key under its own kid', async () => {
      const { workerEnv, user } = setup()
      const stranger = await signingKey(alg)
      const token = await signWith(stranger.privateKey, { alg, kid: stranger.kid }, accessClaims(user.id))
      await expectRefused(await me(workerEnv, token))
    })

    it('refuses a token signed by a key not in the set that claims the current kid', async () => {
      const { current, workerEnv, user } = setup()
      const impostor = await signingKey(alg, current.kid)
      const token = await signWith(impostor.privateKey, { alg, kid: current.kid }, accessClaims(user.id))
      await expectRefused(await me(workerEnv, token))
    })

    it('refuses an HS256 token signed with JWT_SECRET (no switching back to HMAC)', async () => {
      const { current, workerEnv, user } = setup()
      const token = await mintToken(accessClaims(user.id), { kid: current.kid })
      // The same token is good under the default HS256 configuration: only the algorithm is wrong.
      expect((await me(env, token)).status).toBe(200)
      await expectRefused(await me(workerEnv, token))
    })

    it.each([
      ['the public key bytes (x)', (jwk: JWK) => base64url.decode(jwk.x ?? '')],
      ['the public JWK as JSON', (jwk: JWK) => new TextEncoder().encode(JSON.stringify(jwk))],
    ])('refuses an HS256 token keyed with %s (algorithm confusion)', async (_name, secretOf) => {
      const { current, workerEnv, user } = setup()
      const { jwks } = await servedJwks(workerEnv)
      for (const jwk of [current.publicJwk, ...jwks.keys]) {
        const token = await signWith(secretOf(jwk), { alg: 'HS256', kid: current.kid }, accessClaims(user.id))
        await expectRefused(await me(workerEnv, token))
      }
    })

    it(`refuses a ${OTHER_ALG[alg]} token, also when its public key is listed in JWT_PUBLIC_JWKS`, async () => {
      const { current, user } = setup()
      const other = await signingKey(OTHER_ALG[alg])
      const token = await signWith(other.privateKey, { alg: OTHER_ALG[alg], kid: other.kid }, accessClaims(user.id))
      const listingOther = asymmetricEnv(alg, current, [current, other])
      const { jwks } = await servedJwks(listingOther)
      expect(jwks.keys.map((jwk) => jwk.kid)).toEqual([current.kid])

      await expectRefused(await me(listingOther, token))
      const sameKid = await signWith(other.privateKey, { alg: OTHER_ALG[alg], kid: current.kid }, accessClaims(user.id))
      await expectRefused(await me(listingOther, sameKid))
    })
  })
})

describe('default HS256 configuration', () => {
  it('serves an empty JWKS: there is no public key to publish', async () => {
    const { jwks } = await servedJwks(env)
    expect(jwks).toEqual({ keys: [] })
  })
})

describe('Security: a misconfigured JWT_PRIVATE_JWK', () => {
  async function expectMisconfigured(workerEnv: WorkerEnv, secretParts: string[]): Promise<void> {
    for (const path of ['/api/v1/users/me', '/.well-known/jwks.json']) {
      const res = await call(workerEnv, 'GET', path)
      const text = await res.clone().text()
      const problem = await expectProblem(res, 500, 'internal_error')
      expect(problem.detail).toContain('JWT_PRIVATE_JWK')
      for (const part of secretParts) expect(text).not.toContain(part)
      expect(text).not.toMatch(/^\s*at /m)
    }
  }

  it('that is not JSON gives a 500 naming the variable, not echoing it', async () => {
    const material = 'not-json-secret-key-material'
    const workerEnv: WorkerEnv = {
      ...env,
      JWT_ALG: 'EdDSA',
      JWT_PRIVATE_JWK: `{"kty":"OKP","crv":"Ed25519","d":"${material}"`,
    }
    await expectMisconfigured(workerEnv, [material])
  })

  it.each([
    ['EdDSA', 'ES256'],
    ['ES256', 'EdDSA'],
  ] as const)(
    'under JWT_ALG=%s, a %s key (wrong curve) gives a 500 naming the variable, not echoing it',
    async (alg, keyAlg) => {
      const key = await signingKey(keyAlg)
      const workerEnv: WorkerEnv = { ...env, JWT_ALG: alg, JWT_PRIVATE_JWK: JSON.stringify(key.privateJwk) }
      await expectMisconfigured(workerEnv, [key.privateJwk.d ?? 'd'])
    },
  )
})
