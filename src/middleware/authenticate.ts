import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { Config, Env } from '../config'
import type { UserRow } from '../db/schema'
import { loadAuthenticatedUser } from '../db/users'
import { assertCsrfToken, carriesCredentials, readAccessCookie } from '../http/cookie-mode'
import { isSafeMethod } from '../http/request'
import { ApiError, forbidden, notAuthenticated, userGone } from '../lib/api-error'
import { parseId } from '../lib/ids'
import type { BindingTimings } from '../lib/timed-bindings'
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
  /** Epoch seconds of the last time the user proved who they are in this session (`auth_time`); absent: unknown. */
  authTime: number | undefined
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
 * handler's response is thrown away for a 401 that shows nothing of it. A signed-in read then
 * costs one round trip.
 */
export function requireUser() {
  return createMiddleware<AuthenticatingEnv<AuthVariables>>(async function requireUser(c, next) {
    const { auth, admission } = await authenticate(c)
    c.set('auth', auth)
    await next()
    await admission.settled()
  })
}

/** What optionalUser() leaves: the caller's Auth, or undefined for an anonymous request. */
export interface OptionalAuthVariables {
  auth: Auth | undefined
}

/**
 * For public routes whose answer depends on who asks (an author sees their own drafts): a request
 * with credentials is authenticated exactly as by requireUser() (a bad, expired or revoked token
 * is a 401, so a client learns to refresh rather than silently seeing less), one without stays
 * anonymous and costs nothing.
 */
export function optionalUser() {
  return createMiddleware<AuthenticatingEnv<OptionalAuthVariables>>(async function optionalUser(c, next) {
    // Any edgepress cookie counts: a browser whose access cookie expired gets the 401 that makes
    // it refresh, not an anonymous answer.
    if (!carriesCredentials(c)) {
      c.set('auth', undefined)
      return next()
    }
    const { auth, admission } = await authenticate(c)
    c.set('auth', auth)
    await next()
    await admission.settled()
  })
}

/**
 * requireUser() plus the user row, which must have is_admin; others get 403. The row is read
 * while the revocation check is on its way; the answer is given only once both are in.
 */
export function requireAdmin() {
  return createMiddleware<AuthenticatingEnv<AdminVariables>>(async function requireAdmin(c, next) {
    const { auth, admission } = await authenticate(c)
    const [user] = await Promise.all([loadAuthenticatedUser(c.get('db'), auth.userId), admission.settled()])
    if (!user.isAdmin) throw forbidden('This action needs an administrator.')
    c.set('auth', auth)
    c.set('user', user)
    await next()
  })
}

/**
 * Whether the request may go on, once KV has answered: its session not revoked and, for a write,
 * the user's write limit not spent. `settled()` answers that; when it is no, the route's work is
 * discarded: the problem carries none of the route's headers, and Server-Timing shows only what
 * authentication read (a revoked token must not learn how far the handler got).
 */
interface Admission {
  settled(): Promise<void>
}

/**
 * The access token from `Authorization` or, for web apps in cookie mode, from the session cookie
 * (then a state-changing request must also carry the CSRF token). The revocation check is
 * started, not awaited; the request's writes wait for it (the bindings' write gate), and a write
 * is charged to the user's write limit only once the check has passed.
 */
async function authenticate<V extends object>(
  c: Context<AuthenticatingEnv<V>>,
): Promise<{ auth: Auth; admission: Admission }> {
  const header = c.req.header('authorization')
  const cookie = header === undefined ? readAccessCookie(c) : undefined
  const token = cookie ?? readBearerToken(header)
  if (token === null || token === undefined) throw notAuthenticated()
  const claims = await verifyToken(token, 'access', c.get('tokenKeys'), new Date())
  const userId = parseId(claims.sub)
  // A token minted by another service holding the key may name anything; only ids can be users.
  if (userId === null) throw userGone()
  if (cookie !== undefined) await assertCsrfToken(c, claims.sid, c.get('config'))
  const timings = c.get('timings')
  const revocation = assertSessionNotRevoked(
    c.get('revocations'),
    claims.sid,
    c.get('config').tokens.revocationCacheTtlSeconds,
  )
  const atAuthentication = { ...timings }
  const admitted = isSafeMethod(c.req.method)
    ? revocation
    : revocation.then(() => enforceRateLimit(c.env, 'WRITES_BY_USER', `user:${userId}`, timings))
  c.get('writeGate').ready = admitted
  // Settled by requireUser/requireAdmin; this only keeps an early failure from counting as unhandled.
  admitted.catch(() => undefined)
  const auth = {
    userId,
    sessionId: claims.sid,
    tokenId: claims.jti,
    expiresAt: claims.exp,
    viaCookie: cookie !== undefined,
    authTime: claims.authTime,
  }
  const settled = async (): Promise<void> => {
    try {
      await admitted
    } catch (err) {
      throw refusedAfterRoute(err, timings, atAuthentication)
    }
  }
  return { auth, admission: { settled } }
}

/**
 * The problem for a request refused once its route had run: it replaces the route's response
 * entirely (ApiError `discardsResponse`), and the request's figures are those it had when
 * authentication sent the revocation check, with that check's own wait.
 */
function refusedAfterRoute(err: unknown, timings: BindingTimings, atAuthentication: BindingTimings): unknown {
  if (!(err instanceof ApiError)) return err
  const kvMs = timings.kvMs
  Object.assign(timings, atAuthentication, { kvMs, inFlight: 0 })
  return new ApiError(err.status, err.code, err.detail, { ...err.extra, discardsResponse: true })
}

/**
 * Refuses a lasting change (linking a provider, a second factor, the email, deleting the account)
 * unless the user proved who they are in this session within REAUTH_MAX_AGE: 403
 * `reauthentication_required`, which POST /auth/reauthenticate resolves. A bearer token alone,
 * stolen a minute ago, then cannot add a way in.
 */
export function assertRecentSignIn(auth: Pick<Auth, 'authTime'>, config: Config, now: Date): void {
  const age = auth.authTime === undefined ? Number.POSITIVE_INFINITY : Math.floor(now.getTime() / 1000) - auth.authTime
  if (age <= config.tokens.reauthMaxAgeSeconds) return
  throw new ApiError(
    403,
    'reauthentication_required',
    'This change needs a recent sign-in: confirm who you are with POST /api/v1/auth/reauthenticate, then try again.',
  )
}

/** The route needs a recent sign-in (assertRecentSignIn); goes after requireUser(). */
export function requireRecentSignIn() {
  return createMiddleware<AuthenticatingEnv<AuthVariables>>(async function requireRecentSignIn(c, next) {
    assertRecentSignIn(c.get('auth'), c.get('config'), new Date())
    await next()
  })
}

/** Reads `Bearer <token>` or `JWT <token>` (older Flask-JWT clients); the scheme is case-insensitive. */
function readBearerToken(header: string | undefined): string | null {
  if (header === undefined) return null
  const match = /^(?:bearer|jwt)[ \t]+([^\s]+)[ \t]*$/i.exec(header)
  return match?.[1] ?? null
}
