import { SignJWT, errors, jwtVerify } from 'jose'
import type { JWTPayload } from 'jose'
import { ApiError } from './api-error'
import type { TokenKeys } from './token-keys'

export type TokenType = 'access' | 'refresh' | 'mfa'

// An MFA token proves the password step of a login and nothing else: it is accepted only by the
// second step (POST /auth/mfa/verify), for this long.
const MFA_TOKEN_TTL_SECONDS = 300

const TYPE_REQUIRED: Record<TokenType, string> = {
  access: 'An access token is required.',
  refresh: 'A refresh token is required.',
  mfa: 'An MFA token is required.',
}

/** The claims edgepress relies on, after verification. Times are epoch seconds. */
export interface TokenClaims {
  sub: string
  jti: string
  sid: string
  tokenType: TokenType
  iat: number
  exp: number
  /**
   * When the user last proved who they are in this session (OIDC's `auth_time`): the login, or
   * the last POST /auth/reauthenticate. Lasting changes need it recent (REAUTH_MAX_AGE). A token
   * minted elsewhere may leave it out; such a token counts as never re-authenticated.
   */
  authTime?: number
}

/** Who a token is for: the user, the session (`sid`) and when they last proved it was them. */
export interface TokenSubject {
  userId: string
  sid: string
  authTime?: number | undefined
}

export interface TokenPair {
  access_token: string
  refresh_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_expires_in: number
}

export interface IssuedPair {
  pair: TokenPair
  access: TokenClaims
  refresh: TokenClaims
}

// Far above any token we mint (~400 bytes) and small enough that a hostile 10 KB string is
// refused before any base64 or JSON work.
const MAX_TOKEN_LENGTH = 4096

const REQUIRED_CLAIMS = ['sub', 'jti', 'sid', 'iat', 'exp', 'token_type']

/** Signs one token with exactly these claims. Same claims and key give the same token (HS256/EdDSA). */
export async function signToken(claims: TokenClaims, keys: TokenKeys): Promise<string> {
  const extra = claims.authTime === undefined ? {} : { auth_time: claims.authTime }
  const jwt = new SignJWT({ token_type: claims.tokenType, sid: claims.sid, ...extra })
    .setProtectedHeader({ alg: keys.alg, typ: 'JWT', kid: keys.kid })
    .setSubject(claims.sub)
    .setJti(claims.jti)
    .setIssuedAt(claims.iat)
    .setNotBefore(claims.iat)
    .setExpirationTime(claims.exp)
  if (keys.issuer !== undefined) jwt.setIssuer(keys.issuer)
  if (keys.audience !== undefined) jwt.setAudience(keys.audience)
  return jwt.sign(keys.signingKey)
}

/** Mints claims for a fresh token of `tokenType` in session `sid`, issued at `now`. */
export function newClaims(tokenType: TokenType, subject: TokenSubject, keys: TokenKeys, now: Date): TokenClaims {
  const iat = Math.floor(now.getTime() / 1000)
  const ttl =
    tokenType === 'access'
      ? keys.accessTtlSeconds
      : tokenType === 'refresh'
        ? keys.refreshTtlSeconds
        : MFA_TOKEN_TTL_SECONDS
  const claims: TokenClaims = {
    sub: subject.userId,
    sid: subject.sid,
    jti: crypto.randomUUID(),
    tokenType,
    iat,
    exp: iat + ttl,
  }
  if (subject.authTime !== undefined) claims.authTime = subject.authTime
  return claims
}

/** Builds the response body of every endpoint that hands out tokens. */
export async function toTokenPair(access: TokenClaims, refresh: TokenClaims, keys: TokenKeys): Promise<TokenPair> {
  const [accessToken, refreshToken] = await Promise.all([signToken(access, keys), signToken(refresh, keys)])
  return {
    access_token: accessToken,
    refresh_token: refreshToken,
    token_type: 'Bearer',
    expires_in: keys.accessTtlSeconds,
    refresh_expires_in: keys.refreshTtlSeconds,
  }
}

/** Issues a new access + refresh pair for a session. */
export async function issueTokenPair(subject: TokenSubject, keys: TokenKeys, now: Date): Promise<IssuedPair> {
  const access = newClaims('access', subject, keys, now)
  const refresh = newClaims('refresh', subject, keys, now)
  return { pair: await toTokenPair(access, refresh, keys), access, refresh }
}

/**
 * The token a login's password step answers with when the account has a second factor: its own
 * type, a fresh random `sid` (it belongs to no session), valid for MFA_TOKEN_TTL_SECONDS.
 */
export async function issueMfaToken(userId: string, keys: TokenKeys, now: Date): Promise<string> {
  return signToken(newClaims('mfa', { userId, sid: crypto.randomUUID() }, keys, now), keys)
}

/**
 * Verifies signature (exactly the configured algorithm), header and every claim, then the token
 * type. Throws ApiError 401 `token_expired` or `token_invalid`; never says more than that.
 */
export async function verifyToken(
  token: string,
  expected: TokenType | 'any',
  keys: TokenKeys,
  now: Date,
): Promise<TokenClaims> {
  if (token.length > MAX_TOKEN_LENGTH) throw invalidToken('The token is invalid.')
  let payload: JWTPayload
  try {
    const options = {
      algorithms: [keys.alg],
      typ: 'JWT',
      issuer: keys.issuer,
      audience: keys.audience,
      requiredClaims: REQUIRED_CLAIMS,
      clockTolerance: keys.leewaySeconds,
      currentDate: now,
    }
    const key = keys.verificationKey
    // Two calls that look alike: jwtVerify has one overload for a key and one for a key resolver
    // (EdDSA/ES256 pick the key by `kid`), and TypeScript cannot pick an overload for the union.
    const verified =
      typeof key === 'function' ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options)
    payload = verified.payload
  } catch (err) {
    throw toTokenError(err)
  }
  const claims = toClaims(payload)
  const nowSeconds = Math.floor(now.getTime() / 1000)
  // The leeway forgives a minter whose clock runs ahead (nbf, iat); expiry itself is exact.
  if (claims.exp <= nowSeconds) throw expiredToken()
  if (claims.iat > nowSeconds + keys.leewaySeconds) throw invalidToken('The token was issued in the future.')
  // `any` means a token of a session (access or refresh): an MFA token is accepted nowhere but
  // where it is expected by name.
  if (expected === 'any' ? claims.tokenType === 'mfa' : claims.tokenType !== expected) {
    throw invalidToken(expected === 'any' ? 'An access or refresh token is required.' : TYPE_REQUIRED[expected])
  }
  return claims
}

function toClaims(payload: JWTPayload): TokenClaims {
  const { sub, jti, sid, token_type: tokenType, iat, exp, auth_time: authTime } = payload
  const nonEmpty = (value: unknown): value is string => typeof value === 'string' && value !== '' && value.length <= 256
  if (!nonEmpty(sub) || !nonEmpty(jti) || !nonEmpty(sid)) throw invalidToken('The token claims are invalid.')
  if (tokenType !== 'access' && tokenType !== 'refresh' && tokenType !== 'mfa')
    throw invalidToken('The token type is invalid.')
  if (typeof iat !== 'number' || typeof exp !== 'number') throw invalidToken('The token claims are invalid.')
  if (authTime !== undefined && (typeof authTime !== 'number' || !Number.isSafeInteger(authTime))) {
    throw invalidToken('The token claims are invalid.')
  }
  const claims: TokenClaims = { sub, jti, sid, tokenType, iat, exp }
  if (authTime !== undefined) claims.authTime = authTime
  return claims
}

function toTokenError(err: unknown): ApiError {
  if (err instanceof ApiError) return err
  // JWTExpired is matched by its stable code (jose util/errors.ts), not by class hierarchy.
  if (err instanceof errors.JOSEError && err.code === 'ERR_JWT_EXPIRED') return expiredToken()
  return invalidToken('The token is invalid.', err)
}

function invalidToken(detail: string, cause?: unknown): ApiError {
  return new ApiError(401, 'token_invalid', detail, { cause })
}

function expiredToken(): ApiError {
  return new ApiError(401, 'token_expired', 'The token has expired.')
}
