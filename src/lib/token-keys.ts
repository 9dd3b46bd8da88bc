import { createLocalJWKSet, importJWK } from 'jose'
import type { JWK, JWTVerifyGetKey } from 'jose'
import { ApiError } from './api-error'
import { toBase64Url } from './encoding'

export type JwtAlgorithm = 'HS256' | 'EdDSA' | 'ES256'

/** The token settings of the configuration (src/config.ts parses them from the environment). */
export interface TokenSettings {
  alg: JwtAlgorithm
  /** UTF-8 bytes of JWT_SECRET: the HS256 key (docs/API.md, precise point 1). */
  secret: Uint8Array
  privateJwk: string | undefined
  publicJwks: string | undefined
  issuer: string | undefined
  audience: string | undefined
  leewaySeconds: number
  accessTtlSeconds: number
  refreshTtlSeconds: number
  reuseGraceSeconds: number
  /** No refresh this long after the login that started the session, whatever the rotations. */
  sessionMaxAgeSeconds: number
  /** How long a location may cache a revocation lookup (KV cacheTtl), seconds. */
  revocationCacheTtlSeconds: number
  /** How recent the sign-in behind a token must be for a lasting change (REAUTH_MAX_AGE), seconds. */
  reauthMaxAgeSeconds: number
}

/** Everything tokens.ts needs to sign and verify; built once per isolate from the config. */
export interface TokenKeys {
  alg: JwtAlgorithm
  kid: string
  signingKey: CryptoKey
  /** Resolves the verification key; under EdDSA/ES256 by `kid` from the accepted public keys. */
  verificationKey: CryptoKey | JWTVerifyGetKey
  /** Public keys to publish at /.well-known/jwks.json (empty under HS256). */
  publicJwks: { keys: JWK[] }
  issuer: string | undefined
  audience: string | undefined
  leewaySeconds: number
  accessTtlSeconds: number
  refreshTtlSeconds: number
  sessionMaxAgeSeconds: number
}

const CURVES: Record<Exclude<JwtAlgorithm, 'HS256'>, { kty: string; crv: string }> = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
  ES256: { kty: 'EC', crv: 'P-256' },
}

/** Imports the configured keys. Callers memoise the result: importing on every request is waste. */
export async function loadTokenKeys(settings: TokenSettings): Promise<TokenKeys> {
  const common = {
    alg: settings.alg,
    issuer: settings.issuer,
    audience: settings.audience,
    leewaySeconds: settings.leewaySeconds,
    accessTtlSeconds: settings.accessTtlSeconds,
    refreshTtlSeconds: settings.refreshTtlSeconds,
    sessionMaxAgeSeconds: settings.sessionMaxAgeSeconds,
  }
  if (settings.alg === 'HS256') {
    const key = await crypto.subtle.importKey(
      'raw',
      settings.secret as Uint8Array<ArrayBuffer>,
      { name: 'HMAC', hash: 'SHA-256' },
      false,
      ['sign', 'verify'],
    )
    // A kid derived from the secret names the key without revealing anything about it.
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', settings.secret as Uint8Array<ArrayBuffer>))
    const kid = `hs256-${toBase64Url(digest.slice(0, 9))}`
    return { ...common, kid, signingKey: key, verificationKey: key, publicJwks: { keys: [] } }
  }
  return loadAsymmetricKeys(settings, common)
}

async function loadAsymmetricKeys(
  settings: TokenSettings,
  common: Omit<TokenKeys, 'kid' | 'signingKey' | 'verificationKey' | 'publicJwks'>,
): Promise<TokenKeys> {
  const alg = settings.alg as Exclude<JwtAlgorithm, 'HS256'>
  const privateJwk = parseJson<JWK>(settings.privateJwk, 'JWT_PRIVATE_JWK')
  const expected = CURVES[alg]
  if (typeof privateJwk.kid !== 'string' || privateJwk.kid === '') {
    throw misconfigured('JWT_PRIVATE_JWK must carry a "kid".')
  }
  if (privateJwk.kty !== expected.kty || privateJwk.crv !== expected.crv || privateJwk.d === undefined) {
    throw misconfigured(`JWT_PRIVATE_JWK must be a private ${expected.crv} key for JWT_ALG=${alg}.`)
  }
  if (privateJwk.alg !== undefined && privateJwk.alg !== alg) {
    throw misconfigured(`JWT_PRIVATE_JWK has alg ${privateJwk.alg} but JWT_ALG is ${alg}.`)
  }
  const signingKey = (await importJWK({ ...privateJwk, alg }, alg)) as CryptoKey
  const { d: _private, ...currentPublic } = privateJwk
  const published = [toPublicJwk(currentPublic, alg)]
  const previous =
    settings.publicJwks === undefined
      ? []
      : (parseJson<{ keys?: JWK[] }>(settings.publicJwks, 'JWT_PUBLIC_JWKS').keys ?? [])
  for (const jwk of previous) {
    if (jwk.d !== undefined) throw misconfigured('JWT_PUBLIC_JWKS must hold public keys only.')
    // Only keys of the configured family are ever accepted: no algorithm confusion across families.
    if (jwk.kty !== expected.kty || jwk.crv !== expected.crv || typeof jwk.kid !== 'string') continue
    if (published.some((known) => known.kid === jwk.kid)) continue
    published.push(toPublicJwk(jwk, alg))
  }
  const publicJwks = { keys: published }
  return {
    ...common,
    kid: privateJwk.kid,
    signingKey,
    verificationKey: createLocalJWKSet(publicJwks),
    publicJwks,
  }
}

function toPublicJwk(jwk: JWK, alg: string): JWK {
  return {
    kty: jwk.kty,
    crv: jwk.crv,
    x: jwk.x,
    ...(jwk.y === undefined ? {} : { y: jwk.y }),
    kid: jwk.kid,
    alg,
    use: 'sig',
  }
}

function parseJson<T>(text: string | undefined, name: string): T {
  try {
    const value: unknown = JSON.parse(text ?? '')
    if (typeof value === 'object' && value !== null) return value as T
  } catch {
    // fall through to the message below, which must not echo the secret
  }
  throw misconfigured(`${name} is not a JSON object.`)
}

function misconfigured(message: string): ApiError {
  return new ApiError(500, 'internal_error', `Server misconfigured: ${message}`)
}
