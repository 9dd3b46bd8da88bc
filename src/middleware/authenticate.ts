import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { Env } from '../config'
import type { UserRow } from '../db/schema'
import { loadAuthenticatedUser } from '../db/users'
import { assertCsrfToken, readAccessCookie } from '../http/cookie-mode'
import { isSafeMethod } from '../http/request'
import { forbidden, notAuthenticated, userGone } from '../lib/api-error'
import { parseId } from '../lib/ids'
import { verifyToken } from '../lib/tokens'
import { assertSessionNotRevoked } from '../sessions/revocation-keys'
import type { BindingVariables } from './bindings'
import type { ConfigVariables } from './config'
import type { ObserveVariables } from './observe'
import { enforceRateLimit } from './rate-limit'
import type { TokenKeysVariables } from './token-keys'

export interface Auth {
  /** The token's `sub`, parsed once here: a subject that is not one of our user ids is refused. */
  userId: number
  sessionId: string
  tokenId: string
  /** Epoch seconds. */
  expiresAt: number
  /** Authenticated by the cookie-mode session cookie rather than an Authorization header. */
  viaCookie: boolean
}

export interface AuthVariables {
  auth: Auth
}

export interface AdminVariables extends AuthVariables {
  /** The administrator's own row, loaded to check is_admin. */
  user: UserRow
}

/** What authentication reads: config, keys, KV (and D1 for the admin check). */
type AuthenticatingEnv<V> = {
  Bindings: Env
  Variables: ObserveVariables & ConfigVariables & TokenKeysVariables & BindingVariables & V
}

/**
 * Requires a valid, unrevoked access token: one signature check and one KV read, no D1. The KV
 * read overlaps the handler: its first D1 query goes out while the revocation check is on its
 * way, its writes (D1 and KV) wait for the answer, and if the token turns out to be revoked the
 * handler's response is thrown away for a 401. A signed-in read then costs one round trip.
 */
export function requireUser() {
  return createMiddleware<AuthenticatingEnv<AuthVariables>>(async function requireUser(c, next) {
    const { auth, revocation } = await authenticate(c)
    c.set('auth', auth)
    await next()
    await revocation
  })
}

/**
 * requireUser() plus the user row, which must have is_admin; others get 403. The row is read
 * while the revocation check is on its way; the answer is given only once both are in.
 */
export function requireAdmin() {
  return createMiddleware<AuthenticatingEnv<AdminVariables>>(async function requireAdmin(c, next) {
    const { auth, revocation } = await authenticate(c)
    const [user] = await Promise.all([loadAuthenticatedUser(c.var.db, auth.userId), revocation])
    if (!user.isAdmin) throw forbidden('This action needs an administrator.')
    c.set('auth', auth)
    c.set('user', user)
    await next()
  })
}

/**
 * The access token from `Authorization` or, for web apps in cookie mode, from the session cookie
 * (then a state-changing request must also carry the CSRF token). Writes count against the
 * user's write limit. The revocation check is started, not awaited: `revocation` settles with it,
 * and the request's writes wait for it (the bindings' write gate).
 */
async function authenticate<V extends object>(
  c: Context<AuthenticatingEnv<V>>,
): Promise<{ auth: Auth; revocation: Promise<void> }> {
  const header = c.req.header('authorization')
  const cookie = header === undefined ? readAccessCookie(c) : undefined
  const token = cookie ?? readBearerToken(header)
  if (token === null || token === undefined) throw notAuthenticated()
  const claims = await verifyToken(token, 'access', c.var.tokenKeys, new Date())
  const userId = parseId(claims.sub)
  // A token minted by another service holding the key may name anything; only ids can be users.
  if (userId === null) throw userGone()
  if (cookie !== undefined) await assertCsrfToken(c, claims.sid, c.var.config)
  const revocation = assertSessionNotRevoked(c.var.kv, claims.sid, c.var.config.tokens.revocationCacheTtlSeconds)
  c.var.writeGate.ready = revocation
  // Settled by requireUser/requireAdmin; this only keeps an early failure from counting as unhandled.
  revocation.catch(() => undefined)
  if (!isSafeMethod(c.req.method)) await enforceRateLimit(c.env, 'WRITES_BY_USER', `user:${claims.sub}`, c.var.timings)
  const auth = {
    userId,
    sessionId: claims.sid,
    tokenId: claims.jti,
    expiresAt: claims.exp,
    viaCookie: cookie !== undefined,
  }
  return { auth, revocation }
}

/** Reads `Bearer <token>` or `JWT <token>` (older Flask-JWT clients); the scheme is case-insensitive. */
function readBearerToken(header: string | undefined): string | null {
  if (header === undefined) return null
  const match = /^(?:bearer|jwt)[ \t]+([^\s]+)[ \t]*$/i.exec(header)
  return match?.[1] ?? null
}
