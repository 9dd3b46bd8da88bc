import type { BatchItem } from 'drizzle-orm/batch'
import { findSession, reauthenticateSession, rotateSessionToken } from '../db/sessions'
import type { Sighting } from '../db/sessions'
import type { SessionRow } from '../db/schema'
import { ApiError } from '../lib/api-error'
import { parseId } from '../lib/ids'
import { newClaims, toTokenPair } from '../lib/tokens'
import type { TokenClaims, TokenPair } from '../lib/tokens'
import type { SessionDeps } from './deps'
import { lastTokenExpiry, sessionStartLimit } from './deps'
import { endSessions } from './end'
import { isSessionRevoked, revokeSessionKeys } from './revocation-keys'

const fromSeconds = (seconds: number): Date => new Date(seconds * 1000)
const toSeconds = (date: Date): number => Math.floor(date.getTime() / 1000)

/**
 * Exchanges a verified refresh token for a new pair (rotation). The swap is one conditional
 * UPDATE, so of two concurrent refreshes exactly one mints the next family member. Presenting
 * the token that was just rotated within REFRESH_REUSE_GRACE returns the session's current
 * refresh token (same jti) and a fresh access token; presenting any other old token is reuse: the
 * whole session is revoked and 401 `token_reused` is thrown. A rotation records `seen` as the
 * session's last use, in the same statement.
 */
export async function rotateRefreshToken(
  deps: SessionDeps,
  presented: TokenClaims,
  seen: Sighting,
  now: Date,
): Promise<TokenPair> {
  const subject = { userId: presented.sub, sid: presented.sid }
  const refresh = newClaims('refresh', subject, deps.keys, now)
  const userId = parseId(presented.sub)
  // The success path is this one statement: it rotates only the current token of a live session
  // of this user that has not outlived SESSION_MAX_AGE. Anything else is judged below.
  const authenticatedAt =
    userId === null
      ? undefined
      : await rotateSessionToken(
          deps.db,
          {
            sid: presented.sid,
            userId,
            presentedJti: presented.jti,
            next: { jti: refresh.jti, issuedAt: fromSeconds(refresh.iat), expiresAt: fromSeconds(refresh.exp) },
            startedAfter: sessionStartLimit(deps.keys, now),
            seen,
          },
          now,
        )
  if (authenticatedAt !== undefined) {
    // Both tokens carry when the user last proved who they are in this session: the row knows it.
    const authTime = toSeconds(authenticatedAt)
    const access = newClaims('access', { ...subject, authTime }, deps.keys, now)
    return toTokenPair(access, { ...refresh, authTime }, deps.keys)
  }
  // Unknown, revoked or too old (loadLiveSession throws), or a replay of a rotated token, perhaps
  // rotated by a concurrent request between its read and this write.
  const session = await loadLiveSession(deps, presented, now)
  return replayRotatedToken(deps, session, presented, now)
}

async function replayRotatedToken(
  deps: SessionDeps,
  session: SessionRow,
  presented: TokenClaims,
  now: Date,
): Promise<TokenPair> {
  const graceSeconds = deps.config.tokens.reuseGraceSeconds
  const rotatedAt = session.rotatedAt?.getTime()
  // REFRESH_REUSE_GRACE=0 disables the window outright (a replay in the same millisecond included).
  const withinGrace =
    graceSeconds > 0 &&
    session.previousJti === presented.jti &&
    rotatedAt !== undefined &&
    now.getTime() - rotatedAt <= graceSeconds * 1000
  if (withinGrace) {
    const authTime = toSeconds(session.authenticatedAt ?? session.createdAt)
    const current: TokenClaims = {
      sub: presented.sub,
      sid: presented.sid,
      jti: session.currentJti,
      tokenType: 'refresh',
      iat: toSeconds(session.refreshIssuedAt),
      exp: toSeconds(session.refreshExpiresAt),
      authTime,
    }
    const access = newClaims('access', { userId: presented.sub, sid: presented.sid, authTime }, deps.keys, now)
    return toTokenPair(access, current, deps.keys)
  }
  await endSessions(deps, session.userId, { only: [session.sid] }, 'refresh token reuse', now)
  throw new ApiError(
    401,
    'token_reused',
    'This refresh token was already used; the session has been revoked. Log in again.',
  )
}

async function loadLiveSession(deps: SessionDeps, presented: TokenClaims, now: Date): Promise<SessionRow> {
  const session = await findSession(deps.db, presented.sid)
  if (session === undefined || String(session.userId) !== presented.sub) {
    throw new ApiError(401, 'token_invalid', 'The refresh token does not belong to a known session.')
  }
  if (session.revokedAt !== null) {
    await completeRevocation(deps, session, now)
    throw new ApiError(401, 'token_revoked', 'The session has been revoked. Log in again.')
  }
  if (hasOutlivedMaxAge(session, deps, now)) {
    throw new ApiError(401, 'token_expired', 'The session has reached its maximum age. Log in again.')
  }
  return session
}

// SESSION_MAX_AGE: every rotation moves the refresh token's expiry forward, so without an
// absolute limit a stolen refresh family could be kept alive for ever.
function hasOutlivedMaxAge(
  session: Pick<SessionRow, 'createdAt'>,
  deps: Pick<SessionDeps, 'keys'>,
  now: Date,
): boolean {
  return session.createdAt.getTime() <= sessionStartLimit(deps.keys, now).getTime()
}

/** True if the refresh token is the current member of a live session (for /auth/token/verify). */
export async function isCurrentRefreshToken(
  deps: Pick<SessionDeps, 'db' | 'keys'>,
  claims: TokenClaims,
  now: Date,
): Promise<boolean> {
  const session = await findSession(deps.db, claims.sid)
  return (
    session !== undefined &&
    String(session.userId) === claims.sub &&
    session.currentJti === claims.jti &&
    session.revokedAt === null &&
    !hasOutlivedMaxAge(session, deps, now)
  )
}

/**
 * A new token pair for the caller's own live session, carrying `now` as the time the user last
 * proved who they are (step-up after POST /auth/reauthenticate). The session's refresh token
 * rotates, as on a refresh; 401 `token_revoked` when the session is no longer live.
 */
export async function reauthenticatedPair(
  deps: Pick<SessionDeps, 'db' | 'keys'>,
  caller: { userId: number; sessionId: string },
  now: Date,
  options: { alongside?: BatchItem<'sqlite'>[] } = {},
): Promise<TokenPair> {
  const subject = { userId: String(caller.userId), sid: caller.sessionId, authTime: toSeconds(now) }
  const access = newClaims('access', subject, deps.keys, now)
  const refresh = newClaims('refresh', subject, deps.keys, now)
  const next = { jti: refresh.jti, issuedAt: fromSeconds(refresh.iat), expiresAt: fromSeconds(refresh.exp) }
  const session = {
    sid: caller.sessionId,
    userId: caller.userId,
    next,
    startedAfter: sessionStartLimit(deps.keys, now),
  }
  // What the proof spent (a recovery code, an ID token) lands with the new sign-in time.
  const results = await deps.db.batch([reauthenticateSession(deps.db, session, now), ...(options.alongside ?? [])])
  if (results[0].length !== 1) {
    throw new ApiError(401, 'token_revoked', 'The session has ended. Log in again.')
  }
  return toTokenPair(access, refresh, deps.keys)
}

/**
 * A session revoked in D1 while its access tokens may still live, whose revocation did not reach
 * KV and the publisher (the request that revoked it failed there, as a reuse detection answered
 * 503 can): presenting its refresh token again finishes the revocation, so its access tokens stop
 * within the documented bound rather than when they expire.
 */
async function completeRevocation(deps: SessionDeps, session: SessionRow, now: Date): Promise<void> {
  const accessWindowMs = (deps.keys.accessTtlSeconds + deps.keys.leewaySeconds) * 1000
  if (session.revokedAt === null || now.getTime() - session.revokedAt.getTime() > accessWindowMs) return
  const { revocationCacheTtlSeconds } = deps.config.tokens
  if (await isSessionRevoked(deps.revocations, session.sid, revocationCacheTtlSeconds)) return
  const lastTokenExpiresAt = lastTokenExpiry(session.refreshExpiresAt, deps.keys, now)
  await revokeSessionKeys(
    deps.revocations,
    [{ sid: session.sid, lastTokenExpiresAt, filterUntil: lastTokenExpiry(undefined, deps.keys, now) }],
    'revocation completed',
    now,
  )
}
