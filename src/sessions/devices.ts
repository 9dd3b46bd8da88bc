import { endableSessionOf, listRefreshableSessions } from '../db/sessions'
import type { DeviceSession, Refreshable } from '../db/sessions'
import type { SessionDeps } from './deps'
import { secondsBefore, sessionStartLimit } from './deps'
import { endSessions } from './end'
import { isSessionRevoked } from './revocation-keys'

// Sessions as the device list shows them: the ones that can still refresh.

function refreshableAt(deps: Pick<SessionDeps, 'keys'>, now: Date): Refreshable {
  return { now, startedAfter: sessionStartLimit(deps.keys, now) }
}

/** The user's live sessions, most recent activity first (at most MAX_LISTED_SESSIONS). */
export function listDevices(
  deps: Pick<SessionDeps, 'db' | 'keys'>,
  userId: number,
  now: Date,
): Promise<DeviceSession[]> {
  return listRefreshableSessions(deps.db, userId, refreshableAt(deps, now))
}

/** The caller, as authentication saw them: their user, their session and their token's expiry. */
export interface Caller {
  userId: number
  sessionId: string
  /** Epoch seconds. */
  expiresAt: number
}

/**
 * Ends one session of the caller, as logout does, while any token of it may still work; false
 * when `sid` is not one (another user's, unknown or already ended), so that every such id gets
 * the same answer. Checked first and
 * by owner: the KV key is written whatever D1 says, so a foreign id must never reach it.
 */
export async function signOutDevice(deps: SessionDeps, caller: Caller, sid: string, now: Date): Promise<boolean> {
  // Live or not quite over: its last access token may outlive its refresh token and SESSION_MAX_AGE.
  const lastAccess = deps.keys.accessTtlSeconds + deps.keys.leewaySeconds
  const window = {
    refreshExpiredAfter: secondsBefore(now, lastAccess),
    startedAfter: secondsBefore(now, deps.keys.sessionMaxAgeSeconds + lastAccess),
    revokedAfter: secondsBefore(now, lastAccess),
  }
  const state = await endableSessionOf(deps.db, caller.userId, sid, window)
  if (state === false) return false
  // Revoked in D1 while its access tokens may live: ended already, unless an earlier attempt
  // failed before its KV key was written (the row and the key are written at once). Then this
  // retry finishes it.
  if (
    state === 'revoked' &&
    (await isSessionRevoked(deps.revocations, sid, deps.config.tokens.revocationCacheTtlSeconds))
  ) {
    return false
  }
  const own = sid === caller.sessionId
  await endSessions(
    deps,
    caller.userId,
    { only: [sid], tokenExpiresAt: own ? caller.expiresAt : 0 },
    own ? 'logout' : 'signed out from another session',
    now,
  )
  return true
}
