import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { UserRow } from '../db/schema'
import { ApiError, forbidden, notAuthenticated } from '../errors'
import { requireUserRow } from '../routes/users/user-store'
import { isSessionRevoked } from '../lib/revocation'
import { verifyToken } from '../lib/tokens'
import type { TokenClaims } from '../lib/tokens'
import type { AppEnv } from '../router'
import { assertCsrfToken, readAccessCookie } from './cookie-session'
import { enforceRateLimit } from './rate-limit'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

export interface Auth {
  userId: string
  sessionId: string
  tokenId: string
  /** Epoch seconds. */
  expiresAt: number
  /** Authenticated by the cookie-mode session cookie rather than an Authorization header. */
  viaCookie: boolean
}

export interface AuthedEnv extends AppEnv {
  Variables: AppEnv['Variables'] & { auth: Auth }
}

export interface AdminEnv extends AppEnv {
  Variables: AuthedEnv['Variables'] & { user: UserRow }
}

/**
 * Requires a valid, unrevoked access token: one signature check and one KV read, no D1.
 * Handlers that need the user row load it themselves (and answer 401 if it is gone).
 */
export function requireUser() {
  return createMiddleware<AuthedEnv>(async function requireUser(c, next) {
    c.set('auth', await authenticate(c))
    await next()
  })
}

/** requireUser() plus the user row, which must have is_admin; others get 403. */
export function requireAdmin() {
  return createMiddleware<AdminEnv>(async function requireAdmin(c, next) {
    const auth = await authenticate(c)
    const user = await requireUserRow(c.var.db, auth.userId)
    if (!user.isAdmin) throw forbidden('This action needs an administrator.')
    c.set('auth', auth)
    c.set('user', user)
    await next()
  })
}

/**
 * The access token from `Authorization` or, for web apps in cookie mode, from the session cookie
 * (then a state-changing request must also carry the CSRF token).
 */
async function authenticate<E extends AppEnv>(c: Context<E>): Promise<Auth> {
  const header = c.req.header('authorization')
  const cookie = header === undefined ? readAccessCookie(c) : undefined
  const token = cookie ?? readBearerToken(header)
  if (token === null || token === undefined) throw notAuthenticated()
  const claims = await verifyToken(token, 'access', c.var.tokenKeys, new Date())
  if (cookie !== undefined) await assertCsrfToken(c, claims.sid, c.var.config)
  await assertNotRevoked(c.var.kv, claims, c.var.config.tokens.revocationCacheTtlSeconds)
  if (!SAFE_METHODS.has(c.req.method)) await enforceRateLimit(c.env, 'WRITES_BY_USER', `user:${claims.sub}`)
  return { userId: claims.sub, sessionId: claims.sid, tokenId: claims.jti, expiresAt: claims.exp, viaCookie: cookie !== undefined }
}

/** Refuses a token whose session was revoked; fails closed when KV cannot answer. */
export async function assertNotRevoked(kv: KVNamespace, claims: TokenClaims, cacheTtlSeconds: number): Promise<void> {
  let revoked: boolean
  try {
    revoked = await isSessionRevoked(kv, claims.sid, cacheTtlSeconds)
  } catch (err) {
    throw new ApiError(503, 'service_unavailable', 'Token revocation cannot be checked right now.', {
      headers: { 'Retry-After': '5' },
      cause: err,
    })
  }
  if (revoked) throw new ApiError(401, 'token_revoked', 'The token has been revoked.')
}

/** Reads `Bearer <token>` or `JWT <token>` (older Flask-JWT clients); the scheme is case-insensitive. */
export function readBearerToken(header: string | undefined): string | null {
  if (header === undefined) return null
  const match = /^(?:bearer|jwt)[ \t]+([^\s]+)[ \t]*$/i.exec(header)
  return match?.[1] ?? null
}
