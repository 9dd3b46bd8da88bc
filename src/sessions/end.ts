import type { SQL } from 'drizzle-orm'
import type { BatchStatements } from '../db/client'
import { revokeSessionRows, sessionsWithLiveAccessTokens } from '../db/sessions'
import { markAllSessionsEnded } from '../db/users'
import type { RevocableSession, SessionSelection } from '../db/sessions'
import type { SessionDeps } from './deps'
import { lastTokenExpiry, secondsBefore } from './deps'
import { extendFilterEntries, markRevokedHere, recordRevocations, revokeSessionKeys } from './revocation-keys'
import type { SessionRevocation } from './revocation-keys'

/**
 * Which sessions of a user end:
 * - `only`: the named ones (logout, signing out a device, refresh-token reuse). They may include a
 *   session D1 has never seen (a token minted by another service holding the key): it is revoked
 *   in KV all the same, until `tokenExpiresAt` (epoch seconds) at least.
 * - `allBut`: every session except the caller's (turning two-factor sign-in off).
 * - `all`: every session (logout-all, password change or reset, account deletion); `callerSid`,
 *   the session of the request doing it, is revoked last, until `callerTokenExpiresAt` at least
 *   (its token may come from another service holding the key, with a longer life).
 */
export type SessionsToEnd =
  | { only: readonly string[]; tokenExpiresAt?: number }
  | { allBut: string }
  | { all: true; callerSid?: string | undefined; callerTokenExpiresAt?: number | undefined }

/**
 * Builds the statements that mark the sessions revoked, for `userId` or a subquery yielding it;
 * ending every session also records when (an MFA token minted before it is refused).
 */
export type RevokeRows = (userId: number | SQL) => BatchStatements

export interface EndSessionsOptions {
  /**
   * Runs the D1 step: the change behind the revocation and `revokeRows(...)` in one batch, so they
   * land together or not at all. Without it, the UPDATE runs alone.
   */
  commit?: (revokeRows: RevokeRows) => Promise<unknown>
  /**
   * What a failure of the last KV step does once the D1 step has committed: `throw` (the default:
   * the caller retries with the same token, whose key is written last) or `log` (a committed
   * change such as a new password must not answer 5xx: refresh already stops everywhere, the
   * access tokens left end within ACCESS_TOKEN_TTL, and the next revocation writes their keys).
   */
  afterCommit?: 'throw' | 'log'
}

/**
 * Ends sessions of a user: refresh stops at once everywhere (the D1 rows), access tokens at the
 * next request (one KV key per session). Retrying it after a failure completes it:
 * 1. KV keys of every session that ends and may still have a live access token (live, or revoked
 *    within the access-token lifetime); a failure here changes nothing in D1;
 * 2. the D1 step (`commit`), which marks them revoked;
 * 3. KV keys of the caller's own session and of any session that started between 1 and 2.
 * `only` writes its keys and rows at once instead (both idempotent: one round trip, and a retry
 * completes whichever failed).
 */
export async function endSessions(
  deps: SessionDeps,
  userId: number,
  which: SessionsToEnd,
  reason: string,
  now: Date,
  options: EndSessionsOptions = {},
): Promise<void> {
  const revokeRows = rowRevoker(deps, toSelection(which), now)
  if ('only' in which) {
    await endNamedSessions(deps, { userId, which, reason, now, commit: options.commit })
    return
  }
  const commit = options.commit ?? ((revoke: RevokeRows) => deps.db.batch(revoke(userId)))
  const kept = 'allBut' in which ? which.allBut : undefined
  const callerSid = 'all' in which ? which.callerSid : undefined
  const before = await revocableSessions(deps, userId, { includeLive: true, now })
  const written = new Set<string>()
  await writeKeys(deps, before, { skip: [kept, callerSid], written, reason, now })
  await commit(revokeRows)
  try {
    const after = await revocableSessions(deps, userId, { includeLive: false, now })
    await writeKeys(deps, after, { skip: [kept], written, reason, now })
    if (callerSid !== undefined && !written.has(callerSid)) {
      const tokenExpiresAt = 'all' in which ? (which.callerTokenExpiresAt ?? 0) : 0
      // Its token may come from another service holding the key, with a longer life: the key and
      // the filter entry last until it expires, and at least an access-token lifetime.
      const lastTokenExpiresAt = Math.max(tokenExpiresAt, lastTokenExpiry(undefined, deps.keys, now))
      await revokeSessionKeys(deps.revocations, [{ sid: callerSid, lastTokenExpiresAt }], reason, now)
      written.add(callerSid)
    }
  } catch (err) {
    if (options.afterCommit !== 'log') throw err
    console.error(
      JSON.stringify({
        level: 'error',
        message: 'revocation keys not written',
        reason,
        error: err instanceof Error ? err.name : 'unknown',
      }),
    )
  }
}

function toSelection(which: SessionsToEnd): SessionSelection {
  if ('only' in which) return { only: [...new Set(which.only)] }
  return 'allBut' in which ? { allBut: which.allBut } : 'all'
}

function rowRevoker(deps: SessionDeps, selection: SessionSelection, now: Date): RevokeRows {
  // A session whose refresh token expired may still have a live access token when
  // ACCESS_TOKEN_TTL > REFRESH_TOKEN_TTL; older ones have nothing left to revoke.
  const refreshExpiredAfter = secondsBefore(now, deps.keys.accessTtlSeconds)
  return (userId) => {
    const revoke = revokeSessionRows(deps.db, userId, selection, { refreshExpiredAfter }, now)
    return selection === 'all' ? [revoke, markAllSessionsEnded(deps.db, userId, now)] : [revoke]
  }
}

interface NamedSessionsEnd {
  userId: number
  which: { only: readonly string[]; tokenExpiresAt?: number }
  reason: string
  now: Date
  commit: EndSessionsOptions['commit']
}

/**
 * The `only` protocol: the named sessions' keys (never another session's) and their rows. Without
 * a change to commit with them, both at once; with one, the keys first, as for the others.
 */
async function endNamedSessions(deps: SessionDeps, request: NamedSessionsEnd): Promise<void> {
  const { userId, which, reason, now, commit } = request
  const sids = [...new Set(which.only)]
  // The key cannot wait for the row's refresh expiry, so it lives until the latest any refresh
  // token minted now could expire.
  const refreshLimit = new Date(now.getTime() + deps.keys.refreshTtlSeconds * 1000)
  const lastTokenExpiresAt = Math.max(which.tokenExpiresAt ?? 0, lastTokenExpiry(refreshLimit, deps.keys, now))
  // Every token edgepress minted for a session D1 knows expires by then (refresh stops at the
  // row), so the shared filter need not hold it longer; a session D1 does not know is held as long
  // as its key (below), since whoever minted its tokens may mint more.
  const filterUntil = Math.max(which.tokenExpiresAt ?? 0, lastTokenExpiry(undefined, deps.keys, now))
  const keys = sids.map((sid) => ({ sid, lastTokenExpiresAt, filterUntil }))
  const revokeRows = rowRevoker(deps, { only: sids }, now)
  if (commit !== undefined) {
    await revokeSessionKeys(
      deps.revocations,
      keys.map(({ sid }) => ({ sid, lastTokenExpiresAt })),
      reason,
      now,
    )
    await commit(revokeRows)
    return
  }
  const [rows, written] = await Promise.allSettled([
    deps.db.batch(revokeRows(userId)),
    recordRevocations(deps.revocations, keys, reason, now),
  ])
  // Both have finished, so whichever succeeded has taken effect; a failure still fails the request
  // (nothing is marked at this location yet, so the same token can retry it).
  if (rows.status === 'rejected') throw rows.reason
  if (written.status === 'rejected') throw written.reason
  // A session D1 did not know (or had ended already): the filter holds it as long as its key.
  const unknownToD1 = changedRows(rows.value) < sids.length
  if (unknownToD1) {
    await extendFilterEntries(
      deps.revocations,
      sids.map((sid) => ({ sid, until: lastTokenExpiresAt })),
    )
  }
  await markRevokedHere(
    deps.revocations,
    unknownToD1 ? keys.map(({ sid }) => ({ sid, lastTokenExpiresAt })) : keys,
    now,
  )
}

/** Rows the batch's statements changed, added up. */
function changedRows(results: readonly unknown[]): number {
  let changed = 0
  for (const result of results) changed += (result as { meta?: { changes?: number } }).meta?.changes ?? 0
  return changed
}

function revocableSessions(
  deps: SessionDeps,
  userId: number,
  { includeLive, now }: { includeLive: boolean; now: Date },
): Promise<RevocableSession[]> {
  // An access token lives at most this long after the refresh that minted it (or the revocation).
  const since = secondsBefore(now, deps.keys.accessTtlSeconds + deps.keys.leewaySeconds)
  return sessionsWithLiveAccessTokens(deps.db, userId, { includeLive, revokedSince: since, refreshExpiredAfter: since })
}

async function writeKeys(
  deps: SessionDeps,
  candidates: { sid: string; refreshExpiresAt: Date | undefined }[],
  progress: { skip: (string | undefined)[]; written: Set<string>; reason: string; now: Date },
): Promise<void> {
  const { skip, written, reason, now } = progress
  const toWrite = new Map<string, SessionRevocation>()
  for (const { sid, refreshExpiresAt } of candidates) {
    if (skip.includes(sid) || written.has(sid) || toWrite.has(sid)) continue
    // Sessions D1 knows: every token minted for them expires within the access-token lifetime
    // (refresh stops at the row), so the shared filter holds them that long; the exact key may
    // have to wait for the refresh token's expiry (ACCESS_TOKEN_TTL > REFRESH_TOKEN_TTL).
    toWrite.set(sid, {
      sid,
      lastTokenExpiresAt: lastTokenExpiry(refreshExpiresAt, deps.keys, now),
      filterUntil: lastTokenExpiry(undefined, deps.keys, now),
    })
  }
  await revokeSessionKeys(deps.revocations, [...toWrite.values()], reason, now)
  for (const sid of toWrite.keys()) written.add(sid)
}
