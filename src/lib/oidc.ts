import { createLocalJWKSet, errors, jwtVerify } from 'jose'
import type { JSONWebKeySet, JWTPayload } from 'jose'
import { ApiError } from './api-error'
import { constantTimeEqual, utf8 } from './encoding'

/** One OpenID Connect provider apps may sign in with (OIDC_PROVIDERS, parsed by src/config.ts). */
export interface OidcProvider {
  name: string
  issuers: string[]
  jwksUri: string
  audiences: string[]
  algorithms: ('RS256' | 'ES256')[]
  nonce: 'plain' | 'sha256'
}

/** What a verified ID token says about the person signing in. */
export interface ProviderIdentity {
  provider: string
  /** The provider's stable subject: the identity, whatever the email becomes. */
  sub: string
  email: string | undefined
  /** The provider vouches for the address (Apple sends "true" as a string, Google a boolean). */
  emailVerified: boolean
  /** The token's own expiry, epoch seconds: a spent token is remembered until then. */
  expiresAt: number
}

/**
 * The provider's key set; `fresh` bypasses every cache (a key the token names is not in the cached
 * set: the provider may have rotated). Throws a 503 ApiError when the provider cannot answer.
 */
export type ProviderKeySource = (fresh: boolean) => Promise<JSONWebKeySet>

/** ID tokens are exchanged as soon as the native flow ends: an older one is refused. */
export const MAX_ID_TOKEN_AGE_SECONDS = 3600

const MAX_SUB_LENGTH = 255

/** The one answer to every problem with an ID token: no hint of which check failed. */
export const idTokenInvalid = (): ApiError => new ApiError(401, 'token_invalid', 'The ID token is invalid.')

/**
 * Verifies an ID token of `provider`: signature by a key of its JWKS with one of its algorithms,
 * issuer, audience (one of its audiences), exp/iat within `leewaySeconds`, age, and the nonce rule
 * (docs/design.md § Native sign-in (OIDC)). Every failure is the same 401 `token_invalid`.
 */
export async function verifyIdToken(
  token: string,
  provider: OidcProvider,
  keys: ProviderKeySource,
  options: { nonce: string | undefined; leewaySeconds: number; now: Date },
): Promise<ProviderIdentity> {
  const verify = async (fresh: boolean): Promise<JWTPayload> => {
    const { payload } = await jwtVerify(token, createLocalJWKSet(await keys(fresh)), {
      algorithms: provider.algorithms,
      issuer: provider.issuers,
      audience: provider.audiences,
      clockTolerance: options.leewaySeconds,
      currentDate: options.now,
      maxTokenAge: MAX_ID_TOKEN_AGE_SECONDS,
      requiredClaims: ['sub', 'iat', 'exp'],
    })
    return payload
  }
  let payload: JWTPayload
  try {
    try {
      payload = await verify(false)
    } catch (error) {
      // A kid the cached set does not hold: the provider may have rotated; ask it once more.
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error
      payload = await verify(true)
    }
  } catch (error) {
    if (error instanceof ApiError) throw error
    throw idTokenInvalid()
  }
  const { sub } = payload
  if (typeof sub !== 'string' || sub === '' || sub.length > MAX_SUB_LENGTH) throw idTokenInvalid()
  if (!(await nonceMatches(payload.nonce, options.nonce, provider))) throw idTokenInvalid()
  const email = typeof payload.email === 'string' && payload.email !== '' ? payload.email : undefined
  const verified = payload.email_verified === true || payload.email_verified === 'true'
  const vouched = email !== undefined && verified && googleVouchesFor(payload, email)
  return { provider: provider.name, sub, email, emailVerified: vouched, expiresAt: payload.exp! }
}

const GOOGLE_ISSUERS = new Set(['https://accounts.google.com', 'accounts.google.com'])

/**
 * Google sets `email_verified` for any address a Google account was created with, and checked it
 * only then: the owner of a Gmail address or of a Workspace domain (`hd`) keeps it, anyone else may
 * have lost it since. Only those two count as vouched for; other providers' word is taken.
 */
function googleVouchesFor(payload: JWTPayload, email: string): boolean {
  if (typeof payload.iss !== 'string' || !GOOGLE_ISSUERS.has(payload.iss)) return true
  return email.toLowerCase().endsWith('@gmail.com') || (typeof payload.hd === 'string' && payload.hd !== '')
}

/**
 * The nonce rule: when the client sends a nonce the token must carry its match (Apple's holds its
 * SHA-256 in hex, Google's the nonce itself), and when the token carries a nonce the client must
 * send it. Neither side having one is accepted.
 */
async function nonceMatches(claim: unknown, sent: string | undefined, provider: OidcProvider): Promise<boolean> {
  if (claim === undefined && sent === undefined) return true
  if (typeof claim !== 'string' || sent === undefined) return false
  if (provider.nonce === 'plain') return constantTimeEqual(utf8(claim), utf8(sent))
  // Hex in either case: apps format the digest themselves.
  return constantTimeEqual(utf8(claim.toLowerCase()), utf8(await sha256Hex(sent)))
}

/** SHA-256 of the text, in lowercase hex (how Apple's nonce claim is usually formed). */
export async function sha256Hex(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(text)))
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('')
}
