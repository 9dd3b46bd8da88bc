import { SignJWT, base64url, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose'
import type { JWK } from 'jose'
import { describe, expect, it } from 'vitest'
import type { TokenSettings } from '../config'
import { ApiError } from './api-error'
import { loadTokenKeys } from './token-keys'
import type { TokenKeys } from './token-keys'
import { issueTokenPair, newClaims, signToken, verifyToken } from './tokens'
import type { TokenClaims, TokenType } from './tokens'

const SECRET = new TextEncoder().encode('a-test-secret-of-at-least-32-bytes!!')
const OTHER_SECRET = new TextEncoder().encode('another-secret-also-at-least-32-bytes!!')
const NOW = new Date('2026-01-01T00:00:00Z')
const NOW_S = NOW.getTime() / 1000
const LEEWAY = 5
const SUBJECT = { userId: '42', sid: 'session-1' }

function tokenSettings(overrides: Partial<TokenSettings> = {}): TokenSettings {
  return {
    alg: 'HS256',
    secret: SECRET,
    privateJwk: undefined,
    publicJwks: undefined,
    issuer: undefined,
    audience: undefined,
    leewaySeconds: LEEWAY,
    accessTtlSeconds: 600,
    refreshTtlSeconds: 7_200,
    reuseGraceSeconds: 10,
    sessionMaxAgeSeconds: 30 * 86_400,
    revocationCacheTtlSeconds: 60,
    reauthMaxAgeSeconds: 600,
    ...overrides,
  }
}

function secondsAfter(seconds: number): Date {
  return new Date(NOW.getTime() + seconds * 1000)
}

const keys = await loadTokenKeys(tokenSettings())
const ISSUER = 'https://edgepress.test'
const AUDIENCE = 'edgepress-clients'
const scopedKeys = await loadTokenKeys(tokenSettings({ issuer: ISSUER, audience: AUDIENCE }))

/** One base64url segment of a compact JWS: a string is taken as is, anything else as JSON. */
function segment(value: unknown): string {
  return base64url.encode(typeof value === 'string' ? value : JSON.stringify(value))
}

/** Signs a compact JWS by hand, so header and claims can be anything a forger likes. */
async function hmacJwt(header: unknown, payload: unknown, secret = SECRET, hash = 'SHA-256'): Promise<string> {
  const signingInput = `${segment(header)}.${segment(payload)}`
  const key = await crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash }, false, ['sign'])
  const signature = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(signingInput))
  return `${signingInput}.${base64url.encode(new Uint8Array(signature))}`
}

function validHeader(): Record<string, unknown> {
  return { alg: 'HS256', typ: 'JWT', kid: keys.kid }
}

/** Claims that pass every check at NOW; an `undefined` override drops the claim (JSON omits it). */
function validPayload(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const claims = {
    sub: '42',
    jti: 'jti-1',
    sid: 'sid-1',
    token_type: 'access',
    iat: NOW_S,
    nbf: NOW_S,
    exp: NOW_S + 300,
  }
  return { ...claims, ...overrides }
}

async function expectRefused(
  token: string,
  code: 'token_invalid' | 'token_expired' = 'token_invalid',
  { expected = 'any', using = keys, at = NOW }: { expected?: TokenType | 'any'; using?: TokenKeys; at?: Date } = {},
): Promise<void> {
  const refusal = verifyToken(token, expected, using, at)
  await expect(refusal).rejects.toBeInstanceOf(ApiError)
  await expect(refusal).rejects.toMatchObject({ status: 401, code })
}

describe('issueTokenPair', () => {
  it('signs an HS256 JWT header with typ JWT and a kid', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    for (const token of [pair.access_token, pair.refresh_token]) {
      expect(decodeProtectedHeader(token)).toEqual({ alg: 'HS256', typ: 'JWT', kid: keys.kid })
    }
    expect(keys.kid).toMatch(/^hs256-[A-Za-z0-9_-]+$/)
  })

  it('carries sub as a string, token_type, sid and the times of issue', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    expect(decodeJwt(pair.access_token)).toEqual({
      sub: '42',
      token_type: 'access',
      sid: 'session-1',
      jti: expect.any(String),
      iat: NOW_S,
      nbf: NOW_S,
      exp: NOW_S + 600,
    })
    expect(decodeJwt(pair.refresh_token)).toEqual({
      sub: '42',
      token_type: 'refresh',
      sid: 'session-1',
      jti: expect.any(String),
      iat: NOW_S,
      nbf: NOW_S,
      exp: NOW_S + 7_200,
    })
  })

  it('gives every token its own jti', async () => {
    const first = await issueTokenPair(SUBJECT, keys, NOW)
    const second = await issueTokenPair(SUBJECT, keys, NOW)
    const jtis = [first, second].flatMap(({ pair }) =>
      [pair.access_token, pair.refresh_token].map((t) => decodeJwt(t).jti),
    )
    expect(new Set(jtis).size).toBe(4)
  })

  it('reports the configured lifetimes as expires_in and refresh_expires_in', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    expect(pair).toMatchObject({ token_type: 'Bearer', expires_in: 600, refresh_expires_in: 7_200 })
  })

  it('sets iss and aud when they are configured', async () => {
    const { pair } = await issueTokenPair(SUBJECT, scopedKeys, NOW)
    expect(decodeJwt(pair.access_token)).toMatchObject({ iss: ISSUER, aud: AUDIENCE })
    expect(decodeJwt(pair.refresh_token)).toMatchObject({ iss: ISSUER, aud: AUDIENCE })
  })
})

describe('signToken', () => {
  it('round-trips through verifyToken to the same claims', async () => {
    const claims: TokenClaims = { sub: '7', jti: 'j-1', sid: 's-1', tokenType: 'refresh', iat: NOW_S, exp: NOW_S + 60 }
    const token = await signToken(claims, keys)
    await expect(verifyToken(token, 'refresh', keys, NOW)).resolves.toEqual(claims)
  })

  it('gives the same token for the same claims and key under HS256', async () => {
    const claims = newClaims('access', SUBJECT, keys, NOW)
    expect(await signToken(claims, keys)).toBe(await signToken(claims, keys))
  })
})

describe('verifyToken', () => {
  it('accepts a freshly issued pair and returns its claims', async () => {
    const { pair, access, refresh } = await issueTokenPair(SUBJECT, keys, NOW)
    await expect(verifyToken(pair.access_token, 'access', keys, NOW)).resolves.toEqual(access)
    await expect(verifyToken(pair.refresh_token, 'refresh', keys, NOW)).resolves.toEqual(refresh)
  })

  it('accepts a token minted elsewhere with the same key', async () => {
    const token = await hmacJwt(validHeader(), validPayload())
    await expect(verifyToken(token, 'access', keys, NOW)).resolves.toMatchObject({ sub: '42', jti: 'jti-1' })
  })

  it('accepts a token one second before exp', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expect(verifyToken(pair.access_token, 'access', keys, secondsAfter(599))).resolves.toBeDefined()
  })

  it.each([
    ['exactly at exp', 600],
    ['within the leeway after exp', 600 + LEEWAY - 2],
    ['long after exp', 600 + 3_600],
  ])('refuses an access token %s with token_expired', async (_when, offset) => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expectRefused(pair.access_token, 'token_expired', { expected: 'access', at: secondsAfter(offset) })
  })

  it('refuses a refresh token at its exp with token_expired', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expectRefused(pair.refresh_token, 'token_expired', { expected: 'refresh', at: secondsAfter(7_200) })
  })

  it('accepts nbf in the future within the leeway', async () => {
    const token = await hmacJwt(validHeader(), validPayload({ nbf: NOW_S + LEEWAY - 1 }))
    await expect(verifyToken(token, 'access', keys, NOW)).resolves.toBeDefined()
  })

  it('refuses nbf in the future beyond the leeway', async () => {
    const token = await hmacJwt(validHeader(), validPayload({ nbf: NOW_S + 60 }))
    await expectRefused(token)
  })

  it('accepts iat in the future within the leeway', async () => {
    const token = await hmacJwt(validHeader(), validPayload({ iat: NOW_S + LEEWAY - 1 }))
    await expect(verifyToken(token, 'access', keys, NOW)).resolves.toBeDefined()
  })

  it('refuses iat in the future beyond the leeway', async () => {
    const token = await hmacJwt(validHeader(), validPayload({ iat: NOW_S + 60 }))
    await expectRefused(token)
  })

  it('refuses an access token where a refresh token is expected', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expectRefused(pair.access_token, 'token_invalid', { expected: 'refresh' })
  })

  it('refuses a refresh token where an access token is expected', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expectRefused(pair.refresh_token, 'token_invalid', { expected: 'access' })
  })

  it("accepts either type when 'any' is expected", async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expect(verifyToken(pair.access_token, 'any', keys, NOW)).resolves.toMatchObject({ tokenType: 'access' })
    await expect(verifyToken(pair.refresh_token, 'any', keys, NOW)).resolves.toMatchObject({ tokenType: 'refresh' })
  })
})

describe('verifyToken with issuer and audience configured', () => {
  it('accepts a token with the configured iss and aud', async () => {
    const { pair } = await issueTokenPair(SUBJECT, scopedKeys, NOW)
    await expect(verifyToken(pair.access_token, 'access', scopedKeys, NOW)).resolves.toMatchObject({ sub: '42' })
  })

  it.each([
    ['wrong iss', { iss: 'https://evil.test', aud: AUDIENCE }],
    ['wrong aud', { iss: ISSUER, aud: 'someone-else' }],
    ['missing iss', { aud: AUDIENCE }],
    ['missing aud', { iss: ISSUER }],
    ['missing iss and aud', {}],
  ])('refuses a token with %s', async (_case, scope) => {
    const token = await hmacJwt(validHeader(), validPayload(scope))
    await expectRefused(token, 'token_invalid', { using: scopedKeys })
  })

  it('refuses a token issued by the same secret without iss and aud', async () => {
    const { pair } = await issueTokenPair(SUBJECT, keys, NOW)
    await expectRefused(pair.access_token, 'token_invalid', { using: scopedKeys })
  })
})

describe('Security: forged tokens', () => {
  async function validToken(userId = '42'): Promise<string> {
    return (await issueTokenPair({ userId, sid: 'session-1' }, keys, NOW)).pair.access_token
  }

  it('the forging helper makes a token that verifies when nothing is wrong', async () => {
    const token = await hmacJwt(validHeader(), validPayload())
    await expect(verifyToken(token, 'access', keys, NOW)).resolves.toMatchObject({ sub: '42' })
  })

  const forgeries: [string, () => Promise<string>][] = [
    ['alg none (unsecured JWT)', async () => `${segment({ alg: 'none', typ: 'JWT' })}.${segment(validPayload())}.`],
    [
      'alg none with a signature',
      async () => {
        const [, , signature] = (await validToken()).split('.')
        return `${segment({ alg: 'none', typ: 'JWT' })}.${segment(validPayload())}.${signature}`
      },
    ],
    [
      'HS384 with the same secret',
      () => new SignJWT(validPayload()).setProtectedHeader({ alg: 'HS384', typ: 'JWT' }).sign(SECRET),
    ],
    [
      'HS512 with the same secret',
      () => new SignJWT(validPayload()).setProtectedHeader({ alg: 'HS512', typ: 'JWT' }).sign(SECRET),
    ],
    [
      'a tampered payload',
      async () => {
        const [header, , signature] = (await validToken()).split('.')
        return `${header}.${segment(validPayload({ sub: '1' }))}.${signature}`
      },
    ],
    ['a stripped signature', async () => `${(await validToken()).split('.').slice(0, 2).join('.')}.`],
    [
      'a signature from another token',
      async () => {
        const [header, payload] = (await validToken('42')).split('.')
        const [, , signature] = (await validToken('43')).split('.')
        return `${header}.${payload}.${signature}`
      },
    ],
    ['a wrong secret', () => hmacJwt(validHeader(), validPayload(), OTHER_SECRET)],
    ['typ missing', () => hmacJwt({ alg: 'HS256', kid: keys.kid }, validPayload())],
    ["typ 'at+jwt'", () => hmacJwt({ ...validHeader(), typ: 'at+jwt' }, validPayload())],
    [
      'an unknown crit header',
      () => hmacJwt({ ...validHeader(), crit: ['urn:example:ext'], 'urn:example:ext': true }, validPayload()),
    ],
    ...['sub', 'jti', 'sid', 'iat', 'exp', 'token_type'].map((claim): [string, () => Promise<string>] => [
      `${claim} missing`,
      () => hmacJwt(validHeader(), validPayload({ [claim]: undefined })),
    ]),
    ['sub as a number', () => hmacJwt(validHeader(), validPayload({ sub: 42 }))],
    ['sid as a number', () => hmacJwt(validHeader(), validPayload({ sid: 1 }))],
    ['an empty jti', () => hmacJwt(validHeader(), validPayload({ jti: '' }))],
    ["token_type 'id'", () => hmacJwt(validHeader(), validPayload({ token_type: 'id' }))],
    ['exp as a string', () => hmacJwt(validHeader(), validPayload({ exp: String(NOW_S + 300) }))],
    ['a header that is not base64url', async () => `%%%.${segment(validPayload())}.AAAA`],
    ['a header that is not JSON', () => hmacJwt('{"alg":"HS256"', validPayload())],
    ['a payload that is not JSON', () => hmacJwt(validHeader(), 'not json')],
    ['a payload that is a JSON array', () => hmacJwt(validHeader(), ['sub', '42'])],
    ['2 segments', async () => (await validToken()).split('.').slice(0, 2).join('.')],
    ['4 segments', async () => `${await validToken()}.AAAA`],
    ['a 10 KB token', () => hmacJwt(validHeader(), validPayload({ padding: 'x'.repeat(10_240) }), OTHER_SECRET)],
    ['an empty string', async () => ''],
  ]

  it.each(forgeries)('refuses %s with token_invalid', async (_name, forge) => {
    await expectRefused(await forge())
  })

  it('refuses an expired token with a valid signature with token_expired', async () => {
    const token = await hmacJwt(validHeader(), validPayload({ iat: NOW_S - 600, nbf: NOW_S - 600, exp: NOW_S - 300 }))
    await expectRefused(token, 'token_expired')
  })
})

type AsymmetricAlg = 'EdDSA' | 'ES256'

async function generateJwk(alg: AsymmetricAlg | 'ES384', kid: string): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return {
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg },
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg },
  }
}

function asymmetricSettings(alg: AsymmetricAlg, privateJwk: JWK, previous: JWK[] = []): TokenSettings {
  return tokenSettings({
    alg,
    privateJwk: JSON.stringify(privateJwk),
    publicJwks: previous.length === 0 ? undefined : JSON.stringify({ keys: previous }),
  })
}

describe.each(['EdDSA', 'ES256'] as const)('loadTokenKeys with %s', (alg) => {
  it('signs tokens that verify, with alg and kid in the header', async () => {
    const current = await generateJwk(alg, 'current')
    const asymmetricKeys = await loadTokenKeys(asymmetricSettings(alg, current.privateJwk))
    const { pair, access } = await issueTokenPair(SUBJECT, asymmetricKeys, NOW)
    expect(decodeProtectedHeader(pair.access_token)).toEqual({ alg, typ: 'JWT', kid: 'current' })
    await expect(verifyToken(pair.access_token, 'access', asymmetricKeys, NOW)).resolves.toEqual(access)
  })

  it("publishes the current public key without 'd'", async () => {
    const current = await generateJwk(alg, 'current')
    const asymmetricKeys = await loadTokenKeys(asymmetricSettings(alg, current.privateJwk))
    const [published] = asymmetricKeys.publicJwks.keys
    expect(asymmetricKeys.publicJwks.keys).toHaveLength(1)
    expect(published).toMatchObject({ kid: 'current', kty: current.publicJwk.kty, x: current.publicJwk.x })
    expect(published).not.toHaveProperty('d')
    expect(JSON.stringify(asymmetricKeys.publicJwks)).not.toContain(current.privateJwk.d)
  })

  it('accepts a token signed by a previous key listed in the public JWKS', async () => {
    const previous = await generateJwk(alg, 'previous')
    const current = await generateJwk(alg, 'current')
    const previousKeys = await loadTokenKeys(asymmetricSettings(alg, previous.privateJwk))
    const { pair } = await issueTokenPair(SUBJECT, previousKeys, NOW)

    const rotatedKeys = await loadTokenKeys(asymmetricSettings(alg, current.privateJwk, [previous.publicJwk]))
    expect(rotatedKeys.publicJwks.keys.map((jwk) => jwk.kid)).toEqual(['current', 'previous'])
    await expect(verifyToken(pair.access_token, 'access', rotatedKeys, NOW)).resolves.toMatchObject({ sub: '42' })
  })

  it('refuses a token whose kid is not among the accepted keys', async () => {
    const current = await generateJwk(alg, 'current')
    const stranger = await generateJwk(alg, 'stranger')
    const asymmetricKeys = await loadTokenKeys(asymmetricSettings(alg, current.privateJwk))
    const strangerKeys = await loadTokenKeys(asymmetricSettings(alg, stranger.privateJwk))
    const { pair } = await issueTokenPair(SUBJECT, strangerKeys, NOW)
    await expectRefused(pair.access_token, 'token_invalid', { using: asymmetricKeys })
  })

  it('refuses a token signed by an unknown key that claims the current kid', async () => {
    const current = await generateJwk(alg, 'current')
    const impostor = await generateJwk(alg, 'current')
    const asymmetricKeys = await loadTokenKeys(asymmetricSettings(alg, current.privateJwk))
    const impostorKeys = await loadTokenKeys(asymmetricSettings(alg, impostor.privateJwk))
    const { pair } = await issueTokenPair(SUBJECT, impostorKeys, NOW)
    await expectRefused(pair.access_token, 'token_invalid', { using: asymmetricKeys })
  })

  it.each([
    ['the raw public key bytes', (jwk: JWK) => base64url.decode(jwk.x ?? '')],
    ['the public JWK as JSON', (jwk: JWK) => new TextEncoder().encode(JSON.stringify(jwk))],
  ])('refuses an HS256 token keyed with %s (algorithm confusion)', async (_name, secretOf) => {
    const current = await generateJwk(alg, 'current')
    const asymmetricKeys = await loadTokenKeys(asymmetricSettings(alg, current.privateJwk))
    const [published] = asymmetricKeys.publicJwks.keys
    const header = { alg: 'HS256', typ: 'JWT', kid: 'current' }
    for (const jwk of [current.publicJwk, published ?? {}]) {
      await expectRefused(await hmacJwt(header, validPayload(), secretOf(jwk)), 'token_invalid', {
        using: asymmetricKeys,
      })
    }
  })
})

describe('loadTokenKeys misconfiguration', () => {
  it.each([
    ['EdDSA', 'ES256'],
    ['ES256', 'EdDSA'],
    ['ES256', 'ES384'],
  ] as const)('refuses JWT_ALG=%s with a %s private key, naming the variable only', async (alg, keyAlg) => {
    const { privateJwk } = await generateJwk(keyAlg, 'wrong-curve')
    const error = await loadTokenKeys(asymmetricSettings(alg, privateJwk)).then(
      () => undefined,
      (err: unknown) => err,
    )
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 500, detail: expect.stringContaining('JWT_PRIVATE_JWK') })
    const { message, detail, stack } = error as ApiError
    expect(JSON.stringify([message, detail, stack])).not.toContain(privateJwk.d)
  })

  it('refuses a JWT_PRIVATE_JWK that is not JSON without echoing it', async () => {
    const settings = tokenSettings({ alg: 'EdDSA', privateJwk: '{"kty":"OKP","d":"secret-key-material"' })
    const error = await loadTokenKeys(settings).then(
      () => undefined,
      (err: unknown) => err,
    )
    expect(error).toMatchObject({ status: 500, detail: expect.stringContaining('JWT_PRIVATE_JWK') })
    expect((error as ApiError).detail).not.toContain('secret-key-material')
  })

  it('refuses a JWT_PUBLIC_JWKS that holds a private key', async () => {
    const current = await generateJwk('EdDSA', 'current')
    const leaked = await generateJwk('EdDSA', 'leaked')
    const settings = asymmetricSettings('EdDSA', current.privateJwk, [leaked.privateJwk])
    const error = await loadTokenKeys(settings).then(
      () => undefined,
      (err: unknown) => err,
    )
    expect(error).toMatchObject({ status: 500, detail: expect.stringContaining('JWT_PUBLIC_JWKS') })
    expect((error as ApiError).detail).not.toContain(leaked.privateJwk.d)
  })
})
