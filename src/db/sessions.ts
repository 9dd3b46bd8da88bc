import { and, desc, eq, gt, gte, inArray, isNull, lt, ne, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { ApiError } from '../lib/api-error'
import { revokeSessions } from '../lib/revocation'
import type { SessionRevocation } from '../lib/revocation'
import type { TokenKeys } from '../lib/token-keys'
import { issueTokenPair, newClaims, toTokenPair } from '../lib/tokens'
import type { TokenClaims, TokenPair } from '../lib/tokens'
import type { BatchStatements, Db } from './client'
import { sessions } from './schema'
import type { SessionRow } from './schema'

// Login sessions: one row per refresh-token family. The row is the authority for refresh
// (strongly consistent at the D1 primary); each revocation is mirrored to one KV key per session
// (src/lib/revocation.ts) so that access tokens, checked without D1, stop too.

/** Where a request came from, as Cloudflare saw it: ISO 3166-1 alpha-2 country, IATA colo. */
export interface Sighting {
  country: string | null
  colo: string | null
}

/** What a session records of the device that logged in: a short label, never the User-Agent. */
export interface SessionDevice extends Sighting {
  label: string | null
}

const NOT_SEEN: Sighting = { country: null, colo: null }

const toSeconds = (date: Date): number => Math.floor(date.getTime() / 1000)
const fromSeconds = (seconds: number): Date => new Date(seconds * 1000)

/**
 * Starts a login session (a new refresh family) and returns its first token pair. `alongside`
 * runs first in the same D1 batch, so e.g. `last_login_at` (or a password change that ends every
 * other session) and the new session land together or not at all. `device` is what the session
 * list shows of where it started.
 */
export async function startSession(
  db: Db,
  userId: number,
  keys: TokenKeys,
  now: Date,
  alongside: BatchItem<'sqlite'>[] = [],
  device?: SessionDevice,
): Promise<{ pair: TokenPair; sessionId: string }> {
  const subject = { userId: String(userId), sid: crypto.randomUUID() }
  const { pair, refresh } = await issueTokenPair(subject, keys, now)
  const insert = db.insert(sessions).values({
    sid: subject.sid,
    userId,
    currentJti: refresh.jti,
    refreshIssuedAt: fromSeconds(refresh.iat),
    refreshExpiresAt: fromSeconds(refresh.exp),
    createdAt: now,
    deviceLabel: device?.label ?? null,
    loginCountry: device?.country ?? null,
    loginColo: device?.colo ?? null,
  })
  const statements: BatchItem<'sqlite'>[] = [...alongside, insert]
  await db.batch(statements as BatchStatements)
  return { pair, sessionId: subject.sid }
}

/**
 * Exchanges a verified refresh token for a new pair (rotation). The swap is one conditional
 * UPDATE, so of two concurrent refreshes exactly one mints the next family member. Presenting
 * the token that was just rotated within `graceSeconds` returns the session's current refresh
 * token (same jti) and a fresh access token; presenting any other old token is reuse: the whole
 * session is revoked and 401 `token_reused` is thrown. A rotation records `seen` as the session's
 * last use, in the same statement.
 */
export async function rotateRefreshToken(
  db: Db,
  kv: KVNamespace,
  presented: TokenClaims,
  keys: TokenKeys,
  graceSeconds: number,
  now: Date,
  seen: Sighting = NOT_SEEN,
): Promise<TokenPair> {
  // The success path is this one statement: it rotates only the current token of a live session
  // of this user that has not outlived SESSION_MAX_AGE. Anything else is judged below.
  const subject = { userId: presented.sub, sid: presented.sid }
  const access = newClaims('access', subject, keys, now)
  const refresh = newClaims('refresh', subject, keys, now)
  const userId = Number(presented.sub)
  const rotated = Number.isSafeInteger(userId)
    ? await db
        .update(sessions)
        .set({
          currentJti: refresh.jti,
          previousJti: presented.jti,
          refreshIssuedAt: fromSeconds(refresh.iat),
          refreshExpiresAt: fromSeconds(refresh.exp),
          rotatedAt: now,
          lastUsedAt: now,
          lastCountry: seen.country,
          lastColo: seen.colo,
        })
        .where(
          and(
            eq(sessions.sid, presented.sid),
            eq(sessions.userId, userId),
            eq(sessions.currentJti, presented.jti),
            isNull(sessions.revokedAt),
            gt(sessions.createdAt, new Date(now.getTime() - keys.sessionMaxAgeSeconds * 1000)),
          ),
        )
        .returning({ sid: sessions.sid })
    : []
  if (rotated.length === 1) return toTokenPair(access, refresh, keys)
  // Unknown, revoked or too old (loadLiveSession throws), or a replay of a rotated token, perhaps
  // rotated by a concurrent request between its read and this write.
  const session = await loadLiveSession(db, presented, keys, now)
  return replayRotatedToken(db, kv, session, presented, keys, graceSeconds, now)
}

async function replayRotatedToken(
  db: Db,
  kv: KVNamespace,
  session: SessionRow,
  presented: TokenClaims,
  keys: TokenKeys,
  graceSeconds: number,
  now: Date,
): Promise<TokenPair> {
  const rotatedAt = session.rotatedAt?.getTime()
  // REFRESH_REUSE_GRACE=0 disables the window outright (a replay in the same millisecond included).
  const withinGrace =
    graceSeconds > 0 &&
    session.previousJti === presented.jti &&
    rotatedAt !== undefined &&
    now.getTime() - rotatedAt <= graceSeconds * 1000
  if (withinGrace) {
    const subject = { userId: presented.sub, sid: presented.sid }
    const current: TokenClaims = {
      sub: presented.sub,
      sid: presented.sid,
      jti: session.currentJti,
      tokenType: 'refresh',
      iat: toSeconds(session.refreshIssuedAt),
      exp: toSeconds(session.refreshExpiresAt),
    }
    return toTokenPair(newClaims('access', subject, keys, now), current, keys)
  }
  await endSessions(db, kv, [session.sid], session.userId, 'refresh token reuse', now, keys)
  throw new ApiError(
    401,
    'token_reused',
    'This refresh token was already used; the session has been revoked. Log in again.',
  )
}

async function loadLiveSession(db: Db, presented: TokenClaims, keys: TokenKeys, now: Date): Promise<SessionRow> {
  const session = await db.query.sessions.findFirst({ where: eq(sessions.sid, presented.sid) })
  if (session === undefined || String(session.userId) !== presented.sub) {
    throw new ApiError(401, 'token_invalid', 'The refresh token does not belong to a known session.')
  }
  if (session.revokedAt !== null) {
    throw new ApiError(401, 'token_revoked', 'The session has been revoked. Log in again.')
  }
  if (hasOutlivedMaxAge(session, keys, now)) {
    throw new ApiError(401, 'token_expired', 'The session has reached its maximum age. Log in again.')
  }
  return session
}

// SESSION_MAX_AGE: every rotation moves the refresh token's expiry forward, so without an
// absolute limit a stolen refresh family could be kept alive for ever.
function hasOutlivedMaxAge(session: Pick<SessionRow, 'createdAt'>, keys: TokenKeys, now: Date): boolean {
  return now.getTime() >= session.createdAt.getTime() + keys.sessionMaxAgeSeconds * 1000
}

/** True if the refresh token is the current member of a live session (for /auth/token/verify). */
export async function isCurrentRefreshToken(db: Db, claims: TokenClaims, keys: TokenKeys, now: Date): Promise<boolean> {
  const session = await db.query.sessions.findFirst({
    columns: { userId: true, currentJti: true, revokedAt: true, createdAt: true },
    where: eq(sessions.sid, claims.sid),
  })
  return (
    session !== undefined &&
    String(session.userId) === claims.sub &&
    session.currentJti === claims.jti &&
    session.revokedAt === null &&
    !hasOutlivedMaxAge(session, keys, now)
  )
}

/** A session as the device list shows it. */
export type DeviceSession = Pick<
  SessionRow,
  'sid' | 'createdAt' | 'lastUsedAt' | 'deviceLabel' | 'loginCountry' | 'loginColo' | 'lastCountry' | 'lastColo'
>

/** The device list shows at most this many sessions (a user with more ends them with logout-all). */
export const MAX_LISTED_SESSIONS = 100

// The sessions that can still refresh: not revoked, refresh token unexpired, within SESSION_MAX_AGE.
function refreshableSessionsOf(userId: number, now: Date, keys: TokenKeys): SQL {
  return and(
    eq(sessions.userId, userId),
    isNull(sessions.revokedAt),
    gt(sessions.refreshExpiresAt, now),
    gt(sessions.createdAt, new Date(now.getTime() - keys.sessionMaxAgeSeconds * 1000)),
  )!
}

/** The user's live sessions, most recent activity (last refresh, else login) first. */
export async function listLiveSessions(db: Db, userId: number, now: Date, keys: TokenKeys): Promise<DeviceSession[]> {
  return db
    .select({
      sid: sessions.sid,
      createdAt: sessions.createdAt,
      lastUsedAt: sessions.lastUsedAt,
      deviceLabel: sessions.deviceLabel,
      loginCountry: sessions.loginCountry,
      loginColo: sessions.loginColo,
      lastCountry: sessions.lastCountry,
      lastColo: sessions.lastColo,
    })
    .from(sessions)
    .where(refreshableSessionsOf(userId, now, keys))
    .orderBy(desc(sql`coalesce(${sessions.lastUsedAt}, ${sessions.createdAt})`), desc(sessions.createdAt))
    .limit(MAX_LISTED_SESSIONS)
}

/** True if `sid` is a live session of the user: one the device list shows (or would, uncapped). */
export async function isLiveSessionOf(
  db: Db,
  userId: number,
  sid: string,
  now: Date,
  keys: TokenKeys,
): Promise<boolean> {
  const [row] = await db
    .select({ sid: sessions.sid })
    .from(sessions)
    .where(and(eq(sessions.sid, sid), refreshableSessionsOf(userId, now, keys)))
    .limit(1)
  return row !== undefined
}

/**
 * Ends the given sessions of a user (logout, reuse detection): the D1 rows (refresh stops at once,
 * everywhere) and one KV key per session so its access tokens stop too, both in one round trip.
 * `sids` may name sessions D1 has never seen (tokens minted by another service holding the key);
 * they are revoked in KV all the same, until `tokenExpiresAt` (epoch seconds) at least.
 */
export async function endSessions(
  db: Db,
  kv: KVNamespace,
  sids: string[],
  userId: number,
  reason: string,
  now: Date,
  keys: TokenKeys,
  tokenExpiresAt = 0,
): Promise<void> {
  const unique = [...new Set(sids)]
  // D1 and KV at once (one round trip, not two): both writes are idempotent, so a retry completes
  // whichever failed. The KV key cannot wait for the row's refresh expiry, so it lives until the
  // latest any refresh token minted now could expire.
  const lastTokenExpiresAt = Math.max(
    tokenExpiresAt,
    lastTokenExpiry(new Date(now.getTime() + keys.refreshTtlSeconds * 1000), keys, now),
  )
  const outcomes = await Promise.allSettled([
    db
      .update(sessions)
      .set({ revokedAt: now })
      .where(and(inArray(sessions.sid, unique), eq(sessions.userId, userId), isNull(sessions.revokedAt))),
    revokeSessions(
      kv,
      unique.map((sid) => ({ sid, lastTokenExpiresAt })),
      reason,
      now,
    ),
  ])
  // Both have finished, so whichever succeeded has taken effect; a failure still fails the request.
  const failed = outcomes.find((outcome) => outcome.status === 'rejected')
  if (failed !== undefined) throw failed.reason
}

/**
 * Ends every session of a user (logout-all, account deletion). Retrying it completes it:
 * 1. KV keys for every other session that is live or was revoked within the last access-token
 *    lifetime (a failure here changes nothing in D1, and rewrites what an earlier, failed
 *    attempt left out);
 * 2. D1 marks the live sessions revoked, so refresh stops everywhere at once;
 * 3. KV keys for `ownSid` (the caller's session, written last so a failed attempt can be retried
 *    with the same token) and for any session that started between 1 and 2.
 */
export async function endAllSessions(
  db: Db,
  kv: KVNamespace,
  userId: number,
  reason: string,
  now: Date,
  keys: TokenKeys,
  ownSid?: string,
): Promise<void> {
  await endSessionsOfUser(db, kv, userId, reason, now, keys, ownSid, false)
}

/**
 * Ends every session of a user but the caller's (turning two-factor sign-in off), in the same
 * retryable order.
 */
export async function endOtherSessions(
  db: Db,
  kv: KVNamespace,
  userId: number,
  ownSid: string,
  reason: string,
  now: Date,
  keys: TokenKeys,
): Promise<void> {
  await endSessionsOfUser(db, kv, userId, reason, now, keys, ownSid, true)
}

async function endSessionsOfUser(
  db: Db,
  kv: KVNamespace,
  userId: number,
  reason: string,
  now: Date,
  keys: TokenKeys,
  ownSid: string | undefined,
  keepOwn: boolean,
): Promise<void> {
  const written = await revokeSessionKeys(db, kv, userId, reason, now, keys, { includeLive: true, exceptSid: ownSid })
  const live = liveSessionsOf(userId, now, keys)
  await db
    .update(sessions)
    .set({ revokedAt: now })
    .where(keepOwn && ownSid !== undefined ? and(live, ne(sessions.sid, ownSid)) : live)
  await revokeSessionKeys(db, kv, userId, reason, now, keys, {
    includeLive: false,
    alreadyWritten: written,
    ...(keepOwn ? { exceptSid: ownSid } : { ownSid }),
  })
}

/** The UPDATE that ends every live session of a user, for a batch with the change behind it. */
export function revokeLiveSessions(db: Db, userId: number | SQL, now: Date, keys: TokenKeys): BatchItem<'sqlite'> {
  return db
    .update(sessions)
    .set({ revokedAt: now })
    .where(liveSessionsOf(userId, now, keys))
}

function liveSessionsOf(userId: number | SQL, now: Date, keys: TokenKeys): SQL {
  return and(
    eq(sessions.userId, userId),
    isNull(sessions.revokedAt),
    // A session whose refresh token expired may still have a live access token when
    // ACCESS_TOKEN_TTL > REFRESH_TOKEN_TTL; older ones have nothing left to revoke.
    gt(sessions.refreshExpiresAt, new Date(now.getTime() - keys.accessTtlSeconds * 1000)),
  )!
}

interface KeyWriteOptions {
  /** Live sessions too (before D1 revokes them), or only those D1 revoked recently (after). */
  includeLive: boolean
  exceptSid?: string | undefined
  /** Sids whose key this request wrote already. */
  alreadyWritten?: ReadonlySet<string>
  /** Written last, whether or not D1 knows it (a token minted by another service holding the key). */
  ownSid?: string | undefined
}

/**
 * Writes the KV revocation keys of a user's sessions that may still have a live access token:
 * those revoked within the last access-token lifetime, and with `includeLive` the live ones.
 * Returns the sids written.
 */
export async function revokeSessionKeys(
  db: Db,
  kv: KVNamespace,
  userId: number,
  reason: string,
  now: Date,
  keys: TokenKeys,
  options: KeyWriteOptions,
): Promise<Set<string>> {
  const window = new Date(now.getTime() - (keys.accessTtlSeconds + keys.leewaySeconds) * 1000)
  const recent = gte(sessions.revokedAt, window)
  const rows = await db
    .select({ sid: sessions.sid, refreshExpiresAt: sessions.refreshExpiresAt })
    .from(sessions)
    .where(and(eq(sessions.userId, userId), options.includeLive ? or(isNull(sessions.revokedAt), recent) : recent))
  const toWrite: SessionRevocation[] = rows
    .filter(
      (row) =>
        row.sid !== options.exceptSid && row.sid !== options.ownSid && options.alreadyWritten?.has(row.sid) !== true,
    )
    .map((row) => ({ sid: row.sid, lastTokenExpiresAt: lastTokenExpiry(row.refreshExpiresAt, keys, now) }))
  await revokeSessions(kv, toWrite, reason, now)
  const written = new Set([...(options.alreadyWritten ?? []), ...toWrite.map((entry) => entry.sid)])
  if (options.ownSid !== undefined) {
    const own = rows.find((row) => row.sid === options.ownSid)
    await revokeSessions(
      kv,
      [{ sid: options.ownSid, lastTokenExpiresAt: lastTokenExpiry(own?.refreshExpiresAt, keys, now) }],
      reason,
      now,
    )
    written.add(options.ownSid)
  }
  return written
}

/**
 * After a batch that revoked sessions has committed (password change or reset): the KV keys of
 * the caller's old session and of any session that started after the keys were first written.
 * A failure is logged, not thrown: the change is committed, refresh already stops everywhere, the
 * access tokens left end within ACCESS_TOKEN_TTL, and the next logout-all, password change or
 * reset writes their keys again.
 */
export async function completeRevocation(
  db: Db,
  kv: KVNamespace,
  userId: number,
  reason: string,
  now: Date,
  keys: TokenKeys,
  written: ReadonlySet<string>,
  ownSid?: string,
): Promise<void> {
  try {
    await revokeSessionKeys(db, kv, userId, reason, now, keys, { includeLive: false, alreadyWritten: written, ownSid })
  } catch (err) {
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

// An access token minted just before the revocation may outlive the refresh token's expiry when
// ACCESS_TOKEN_TTL > REFRESH_TOKEN_TTL, so the KV key lives until the later of the two.
function lastTokenExpiry(refreshExpiresAt: Date | undefined, keys: TokenKeys, now: Date): number {
  const accessLimit = toSeconds(now) + keys.accessTtlSeconds + keys.leewaySeconds
  const refreshLimit = refreshExpiresAt === undefined ? 0 : toSeconds(refreshExpiresAt)
  return Math.max(accessLimit, refreshLimit)
}

/** Deletes sessions whose refresh token expired before `cutoff` (the cron). */
export function pruneSessions(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(sessions).where(lt(sessions.refreshExpiresAt, cutoff))
}
