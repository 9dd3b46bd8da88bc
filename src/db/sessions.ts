import { and, desc, eq, gt, gte, inArray, isNull, lt, ne, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { sessions, users } from './schema'
import type { SessionRow } from './schema'

// The sessions table: one row per login session (refresh-token family). Only SQL lives here; the
// protocol that keeps these rows, the KV revocation keys and the tokens in step is src/sessions/.

/** A session's current refresh token, as the row records it. */
export interface RefreshTokenRecord {
  jti: string
  issuedAt: Date
  expiresAt: Date
}

/** Where a request came from, as Cloudflare saw it: ISO 3166-1 alpha-2 country, IATA colo. */
export interface Sighting {
  country: string | null
  colo: string | null
}

/** What a session records of the device that logged in: a short label, never the User-Agent. */
export interface SessionDevice extends Sighting {
  label: string | null
}

/**
 * Takes back, in the same batch, a session just inserted for an account that no longer is as the
 * login checked it (`accountIsUnchanged`, from src/db/users.ts): one changed row means the login
 * must be decided again from the primary's row.
 */
export function dropSessionUnless(db: Db, sid: string, accountIsUnchanged: SQL): BatchItem<'sqlite'> {
  return db
    .delete(sessions)
    .where(and(eq(sessions.sid, sid), sql`not exists (select 1 from ${users} where ${accountIsUnchanged})`))
}

/** The INSERT of a new session: run it in a batch with the change behind the login. */
export function insertSession(
  db: Db,
  session: { sid: string; userId: number; refresh: RefreshTokenRecord; device: SessionDevice | undefined },
  now: Date,
): BatchItem<'sqlite'> {
  return db.insert(sessions).values({
    sid: session.sid,
    userId: session.userId,
    currentJti: session.refresh.jti,
    refreshIssuedAt: session.refresh.issuedAt,
    refreshExpiresAt: session.refresh.expiresAt,
    createdAt: now,
    deviceLabel: session.device?.label ?? null,
    loginCountry: session.device?.country ?? null,
    loginColo: session.device?.colo ?? null,
  })
}

export interface Rotation {
  sid: string
  userId: number
  /** The refresh token presented: it must be the session's current one. */
  presentedJti: string
  next: RefreshTokenRecord
  /** The session must have started after this (SESSION_MAX_AGE). */
  startedAfter: Date
  seen: Sighting
}

/**
 * Swaps the session's current refresh token for the next one, in one conditional UPDATE: of two
 * concurrent rotations of one token exactly one succeeds. Records the use. Returns when the user
 * last proved who they are in the session (the login, or a later re-authentication), or
 * undefined when it did not rotate.
 */
export async function rotateSessionToken(db: Db, rotation: Rotation, now: Date): Promise<Date | undefined> {
  const rotated = await db
    .update(sessions)
    .set({
      currentJti: rotation.next.jti,
      previousJti: rotation.presentedJti,
      refreshIssuedAt: rotation.next.issuedAt,
      refreshExpiresAt: rotation.next.expiresAt,
      rotatedAt: now,
      lastUsedAt: now,
      lastCountry: rotation.seen.country,
      lastColo: rotation.seen.colo,
    })
    .where(
      and(
        eq(sessions.sid, rotation.sid),
        eq(sessions.userId, rotation.userId),
        eq(sessions.currentJti, rotation.presentedJti),
        isNull(sessions.revokedAt),
        gt(sessions.createdAt, rotation.startedAfter),
      ),
    )
    .returning({ createdAt: sessions.createdAt, authenticatedAt: sessions.authenticatedAt })
  const [row] = rotated
  return row === undefined ? undefined : (row.authenticatedAt ?? row.createdAt)
}

/**
 * The re-authentication of a live session: its refresh token rotates as on a refresh (the one it
 * replaces stays valid for the reuse grace window) and `authenticated_at` becomes `now`: the
 * statement, which returns no row when the session is not live (revoked, or older than
 * `startedAfter`).
 */
export function reauthenticateSession(
  db: Db,
  session: { sid: string; userId: number; next: RefreshTokenRecord; startedAfter: Date },
  now: Date,
) {
  return db
    .update(sessions)
    .set({
      currentJti: session.next.jti,
      previousJti: sql`${sessions.currentJti}`,
      refreshIssuedAt: session.next.issuedAt,
      refreshExpiresAt: session.next.expiresAt,
      rotatedAt: now,
      authenticatedAt: now,
    })
    .where(
      and(
        eq(sessions.sid, session.sid),
        eq(sessions.userId, session.userId),
        isNull(sessions.revokedAt),
        gt(sessions.createdAt, session.startedAfter),
      ),
    )
    .returning({ sid: sessions.sid })
}

export async function findSession(db: Db, sid: string): Promise<SessionRow | undefined> {
  return db.query.sessions.findFirst({ where: eq(sessions.sid, sid) })
}

/** A session as the device list shows it. */
export type DeviceSession = Pick<
  SessionRow,
  'sid' | 'createdAt' | 'lastUsedAt' | 'deviceLabel' | 'loginCountry' | 'loginColo' | 'lastCountry' | 'lastColo'
>

/** The device list shows at most this many sessions (a user with more ends them with logout-all). */
export const MAX_LISTED_SESSIONS = 100

/** The sessions that can still refresh: not revoked, refresh token unexpired, started after `startedAfter`. */
export interface Refreshable {
  now: Date
  startedAfter: Date
}

function refreshableSessionsOf(userId: number, { now, startedAfter }: Refreshable): SQL {
  return and(
    eq(sessions.userId, userId),
    isNull(sessions.revokedAt),
    gt(sessions.refreshExpiresAt, now),
    gt(sessions.createdAt, startedAfter),
  )!
}

/** The user's refreshable sessions, most recent activity (last refresh, else login) first. */
export async function listRefreshableSessions(db: Db, userId: number, window: Refreshable): Promise<DeviceSession[]> {
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
    .where(refreshableSessionsOf(userId, window))
    .orderBy(desc(sql`coalesce(${sessions.lastUsedAt}, ${sessions.createdAt})`), desc(sessions.createdAt))
    .limit(MAX_LISTED_SESSIONS)
}

/** True if `sid` is a refreshable session of the user: one the device list shows (or would, uncapped). */
export async function isRefreshableSessionOf(
  db: Db,
  userId: number,
  sid: string,
  window: Refreshable,
): Promise<boolean> {
  const [row] = await db
    .select({ sid: sessions.sid })
    .from(sessions)
    .where(and(eq(sessions.sid, sid), refreshableSessionsOf(userId, window)))
    .limit(1)
  return row !== undefined
}

/**
 * Whether `sid` is a session of the user that may still have a live access token: `live` when
 * not revoked and neither its refresh token nor its start is older than the windows given (a
 * session past SESSION_MAX_AGE can no longer refresh, but the access token of its last refresh
 * lives on for a while: it can still be ended); `revoked` when it was revoked after
 * `revokedAfter` (its access tokens may still be live, so its KV key matters); else false.
 */
export async function endableSessionOf(
  db: Db,
  userId: number,
  sid: string,
  window: { refreshExpiredAfter: Date; startedAfter: Date; revokedAfter: Date },
): Promise<'live' | 'revoked' | false> {
  const [row] = await db
    .select({ revokedAt: sessions.revokedAt })
    .from(sessions)
    .where(
      and(
        eq(sessions.sid, sid),
        eq(sessions.userId, userId),
        or(isNull(sessions.revokedAt), gt(sessions.revokedAt, window.revokedAfter)),
        gt(sessions.refreshExpiresAt, window.refreshExpiredAfter),
        gt(sessions.createdAt, window.startedAfter),
      ),
    )
    .limit(1)
  if (row === undefined) return false
  return row.revokedAt === null ? 'live' : 'revoked'
}

/** Which of a user's sessions a revocation names. */
export type SessionSelection = { only: readonly string[] } | { allBut: string } | 'all'

/**
 * The UPDATE that marks the selected live sessions of a user revoked; `userId` may be a subquery
 * (a one-time token's owner, which yields nothing once the token is spent). A session whose
 * refresh token expired before `refreshExpiredAfter` has nothing left to revoke.
 */
export function revokeSessionRows(
  db: Db,
  userId: number | SQL,
  selection: SessionSelection,
  window: { refreshExpiredAfter: Date },
  now: Date,
): BatchItem<'sqlite'> {
  const live = and(
    eq(sessions.userId, userId),
    isNull(sessions.revokedAt),
    gt(sessions.refreshExpiresAt, window.refreshExpiredAfter),
  )
  const selected =
    selection === 'all'
      ? live
      : 'only' in selection
        ? and(inArray(sessions.sid, [...selection.only]), live)
        : and(live, ne(sessions.sid, selection.allBut))
  return db.update(sessions).set({ revokedAt: now }).where(selected)
}

/** A session whose access tokens may still be live, with its refresh token's expiry. */
export interface RevocableSession {
  sid: string
  refreshExpiresAt: Date
}

/**
 * The user's sessions revoked at or after `revokedSince`, and with `includeLive` the sessions not
 * revoked whose refresh token expired after `refreshExpiredAfter` (older ones minted their last
 * access token too long ago to matter): those whose access tokens may still be live and need a KV
 * revocation key.
 */
export async function sessionsWithLiveAccessTokens(
  db: Db,
  userId: number,
  options: { includeLive: boolean; revokedSince: Date; refreshExpiredAfter?: Date },
): Promise<RevocableSession[]> {
  const recent = gte(sessions.revokedAt, options.revokedSince)
  const live = and(
    isNull(sessions.revokedAt),
    options.refreshExpiredAfter === undefined ? undefined : gt(sessions.refreshExpiresAt, options.refreshExpiredAfter),
  )
  return db
    .select({ sid: sessions.sid, refreshExpiresAt: sessions.refreshExpiresAt })
    .from(sessions)
    .where(and(eq(sessions.userId, userId), options.includeLive ? or(live, recent) : recent))
}

/** Deletes sessions whose refresh token expired before `cutoff` (the cron). */
export function pruneSessions(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(sessions).where(lt(sessions.refreshExpiresAt, cutoff))
}
