import { env } from 'cloudflare:workers'
import { inArray } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import type { BatchStatements } from './client'
import { sessions } from './schema'
import {
  MAX_LISTED_SESSIONS,
  findSession,
  insertSession,
  isRefreshableSessionOf,
  listRefreshableSessions,
  pruneSessions,
  revokeSessionRows,
  rotateSessionToken,
  sessionsWithLiveAccessTokens,
} from './sessions'
import type { Rotation } from './sessions'
import { insertUser, userIdByEmail } from './users'

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const HOUR = 3_600_000
const DAY = 24 * HOUR
const at = (ms: number): Date => new Date(T0.getTime() + ms)

async function newUser(): Promise<{ id: number; email: string }> {
  const username = uniqueName('dbsessions')
  const email = `${username}@example.com`
  const [row] = await db.batch([insertUser(db, { username, email, passwordHash: 'not-a-hash' }, T0)])
  return { id: row[0]!.id, email }
}

interface SessionSpec {
  createdAt?: Date
  refreshExpiresAt?: Date
  revokedAt?: Date
}

/** A session row of the user: started at T0 with a day-long refresh token unless told otherwise. */
async function addSession(userId: number, spec: SessionSpec = {}): Promise<{ sid: string; jti: string }> {
  const sid = crypto.randomUUID()
  const jti = crypto.randomUUID()
  const createdAt = spec.createdAt ?? T0
  const refresh = { jti, issuedAt: createdAt, expiresAt: spec.refreshExpiresAt ?? new Date(createdAt.getTime() + DAY) }
  await db.batch([insertSession(db, { sid, userId, refresh, device: undefined }, createdAt)])
  if (spec.revokedAt !== undefined) {
    await db.batch([revokeSessionRows(db, userId, { only: [sid] }, { refreshExpiredAfter: T0 }, spec.revokedAt)])
  }
  return { sid, jti }
}

const revokedAt = async (sid: string) => (await findSession(db, sid))?.revokedAt

function rotation(userId: number, session: { sid: string; jti: string }, overrides: Partial<Rotation> = {}): Rotation {
  return {
    sid: session.sid,
    userId,
    presentedJti: session.jti,
    next: { jti: crypto.randomUUID(), issuedAt: at(HOUR), expiresAt: at(HOUR + DAY) },
    startedAfter: at(-DAY),
    seen: { country: 'NL', colo: 'AMS' },
    ...overrides,
  }
}

describe('insertSession and findSession', () => {
  it('records the device and the refresh token; findSession reads it back, undefined for an unknown sid', async () => {
    const { id } = await newUser()
    const sid = crypto.randomUUID()
    const refresh = { jti: 'jti-1', issuedAt: T0, expiresAt: at(DAY) }
    const device = { label: 'Chrome on Android', country: 'BR', colo: 'GRU' }
    await db.batch([insertSession(db, { sid, userId: id, refresh, device }, at(5))])

    expect(await findSession(db, sid)).toMatchObject({
      userId: id,
      currentJti: 'jti-1',
      previousJti: null,
      refreshIssuedAt: T0,
      refreshExpiresAt: at(DAY),
      createdAt: at(5),
      deviceLabel: 'Chrome on Android',
      loginCountry: 'BR',
      loginColo: 'GRU',
    })
    expect(await findSession(db, crypto.randomUUID())).toBeUndefined()
  })
})

describe('rotateSessionToken', () => {
  it('swaps the current token, keeps the presented one as previous and records the use, once', async () => {
    const { id } = await newUser()
    const session = await addSession(id)
    const swap = rotation(id, session)

    expect(await rotateSessionToken(db, swap, at(HOUR))).toBeInstanceOf(Date)
    expect(await findSession(db, session.sid)).toMatchObject({
      currentJti: swap.next.jti,
      previousJti: session.jti,
      refreshIssuedAt: swap.next.issuedAt,
      refreshExpiresAt: swap.next.expiresAt,
      rotatedAt: at(HOUR),
      lastUsedAt: at(HOUR),
      lastCountry: 'NL',
      lastColo: 'AMS',
    })
    // The presented token is no longer current.
    expect(await rotateSessionToken(db, rotation(id, session), at(2 * HOUR))).toBeUndefined()
  })

  it('refuses a jti that is not the current one, and another user', async () => {
    const { id } = await newUser()
    const other = await newUser()
    const session = await addSession(id)

    expect(
      await rotateSessionToken(db, rotation(id, session, { presentedJti: 'not-current' }), at(HOUR)),
    ).toBeUndefined()
    expect(await rotateSessionToken(db, rotation(other.id, session), at(HOUR))).toBeUndefined()
    expect((await findSession(db, session.sid))?.currentJti).toBe(session.jti)
  })

  it('refuses a revoked session', async () => {
    const { id } = await newUser()
    const session = await addSession(id, { revokedAt: at(1) })
    expect(await rotateSessionToken(db, rotation(id, session), at(HOUR))).toBeUndefined()
  })

  it('refuses a session that did not start strictly after startedAfter (SESSION_MAX_AGE)', async () => {
    const { id } = await newUser()
    const session = await addSession(id)
    expect(await rotateSessionToken(db, rotation(id, session, { startedAfter: T0 }), at(HOUR))).toBeUndefined()
    expect(await rotateSessionToken(db, rotation(id, session, { startedAfter: at(-1) }), at(HOUR))).toBeInstanceOf(Date)
  })
})

describe('listRefreshableSessions and isRefreshableSessionOf', () => {
  const window = { now: at(HOUR), startedAfter: at(-1) }

  it('take live sessions whose refresh token outlives `now` and that started after `startedAfter`', async () => {
    const { id } = await newUser()
    const live = await addSession(id)
    const expiresNow = await addSession(id, { refreshExpiresAt: at(HOUR) })
    const startedAtLimit = await addSession(id, { createdAt: at(-1) })
    const revoked = await addSession(id, { revokedAt: at(1) })

    expect((await listRefreshableSessions(db, id, window)).map((row) => row.sid)).toEqual([live.sid])
    expect(await isRefreshableSessionOf(db, id, live.sid, window)).toBe(true)
    for (const session of [expiresNow, startedAtLimit, revoked]) {
      expect(await isRefreshableSessionOf(db, id, session.sid, window)).toBe(false)
    }
  })

  it('isRefreshableSessionOf is false for another user’s session', async () => {
    const { id } = await newUser()
    const other = await newUser()
    const session = await addSession(other.id)
    expect(await isRefreshableSessionOf(db, id, session.sid, window)).toBe(false)
  })

  it(`lists at most MAX_LISTED_SESSIONS (${MAX_LISTED_SESSIONS}), the least recently active left out`, async () => {
    const { id } = await newUser()
    // One INSERT per row (D1 allows 100 bound parameters per statement), all in one batch.
    const sids = Array.from({ length: MAX_LISTED_SESSIONS + 1 }, () => crypto.randomUUID())
    const inserts = sids.map((sid, i) =>
      insertSession(
        db,
        { sid, userId: id, refresh: { jti: sid, issuedAt: at(i), expiresAt: at(DAY) }, device: undefined },
        at(i),
      ),
    )
    await db.batch(inserts as BatchStatements)

    const listed = await listRefreshableSessions(db, id, window)
    expect(listed).toHaveLength(MAX_LISTED_SESSIONS)
    expect(listed.map((row) => row.sid)).toEqual(sids.slice(1).reverse())
  })
})

describe('revokeSessionRows', () => {
  const window = { refreshExpiredAfter: at(-HOUR) }

  async function threeSessions() {
    const user = await newUser()
    const sids = [(await addSession(user.id)).sid, (await addSession(user.id)).sid, (await addSession(user.id)).sid]
    return { ...user, sids: sids as [string, string, string] }
  }

  it("'all' revokes every live session of the user and no one else's", async () => {
    const { id, sids } = await threeSessions()
    const other = await threeSessions()
    await db.batch([revokeSessionRows(db, id, 'all', window, at(HOUR))])
    for (const sid of sids) expect(await revokedAt(sid)).toEqual(at(HOUR))
    for (const sid of other.sids) expect(await revokedAt(sid)).toBeNull()
  })

  it('`only` revokes the named sessions of the user, not a named session of another user', async () => {
    const { id, sids } = await threeSessions()
    const other = await threeSessions()
    await db.batch([revokeSessionRows(db, id, { only: [sids[0], other.sids[0]] }, window, at(HOUR))])
    expect(await revokedAt(sids[0])).toEqual(at(HOUR))
    expect(await revokedAt(sids[1])).toBeNull()
    expect(await revokedAt(other.sids[0])).toBeNull()
  })

  it('`allBut` revokes every session of the user except the named one', async () => {
    const { id, sids } = await threeSessions()
    await db.batch([revokeSessionRows(db, id, { allBut: sids[1] }, window, at(HOUR))])
    expect(await revokedAt(sids[0])).toEqual(at(HOUR))
    expect(await revokedAt(sids[1])).toBeNull()
    expect(await revokedAt(sids[2])).toEqual(at(HOUR))
  })

  it('keeps the revocation time of a session already revoked', async () => {
    const { id } = await newUser()
    const session = await addSession(id, { revokedAt: at(1) })
    await db.batch([revokeSessionRows(db, id, 'all', window, at(HOUR))])
    expect(await revokedAt(session.sid)).toEqual(at(1))
  })

  it('leaves a session whose refresh token expired at or before refreshExpiredAfter', async () => {
    const { id } = await newUser()
    const atLimit = await addSession(id, { createdAt: at(-DAY), refreshExpiresAt: at(-HOUR) })
    const justAfter = await addSession(id, { createdAt: at(-DAY), refreshExpiresAt: at(-HOUR + 1) })
    await db.batch([revokeSessionRows(db, id, 'all', window, at(HOUR))])
    expect(await revokedAt(atLimit.sid)).toBeNull()
    expect(await revokedAt(justAfter.sid)).toEqual(at(HOUR))
  })

  it('takes the user as an SQL subquery; one that yields nothing revokes nothing', async () => {
    const { email, sids } = await threeSessions()
    await db.batch([revokeSessionRows(db, userIdByEmail(`nobody-${email}`), 'all', window, at(HOUR))])
    expect(await revokedAt(sids[0])).toBeNull()
    await db.batch([revokeSessionRows(db, userIdByEmail(email.toUpperCase()), { allBut: sids[0] }, window, at(HOUR))])
    expect(await revokedAt(sids[0])).toBeNull()
    expect(await revokedAt(sids[1])).toEqual(at(HOUR))
  })
})

describe('sessionsWithLiveAccessTokens', () => {
  it('gives the sessions revoked at or after revokedSince, and with includeLive the unrevoked ones', async () => {
    const { id } = await newUser()
    const live = await addSession(id)
    const atLimit = await addSession(id, { revokedAt: at(HOUR) })
    const recent = await addSession(id, { revokedAt: at(2 * HOUR) })
    await addSession(id, { revokedAt: at(HOUR - 1) })
    await addSession((await newUser()).id)
    const options = { revokedSince: at(HOUR) }

    const withLive = await sessionsWithLiveAccessTokens(db, id, { ...options, includeLive: true })
    const revokedOnly = await sessionsWithLiveAccessTokens(db, id, { ...options, includeLive: false })

    const sids = (rows: { sid: string }[]) => rows.map((row) => row.sid).sort()
    expect(sids(withLive)).toEqual([live.sid, atLimit.sid, recent.sid].sort())
    expect(sids(revokedOnly)).toEqual([atLimit.sid, recent.sid].sort())
    expect(withLive.find((row) => row.sid === live.sid)?.refreshExpiresAt).toEqual(at(DAY))
  })
})

describe('pruneSessions', () => {
  it('deletes the sessions whose refresh token expired before the cutoff, of any user', async () => {
    // Long ago, so that no other test's session is old enough to be pruned with them.
    const cutoff = new Date('2001-01-01T00:00:00.000Z')
    const { id } = await newUser()
    const other = await newUser()
    const expired = await addSession(id, {
      createdAt: new Date(cutoff.getTime() - DAY),
      refreshExpiresAt: new Date(cutoff.getTime() - 1),
    })
    const othersExpired = await addSession(other.id, {
      createdAt: new Date(cutoff.getTime() - DAY),
      refreshExpiresAt: new Date(cutoff.getTime() - 1),
    })
    const atCutoff = await addSession(id, { createdAt: new Date(cutoff.getTime() - DAY), refreshExpiresAt: cutoff })
    const live = await addSession(id)

    await db.batch([pruneSessions(db, cutoff)])

    const left = await db
      .select({ sid: sessions.sid })
      .from(sessions)
      .where(inArray(sessions.sid, [expired.sid, othersExpired.sid, atCutoff.sid, live.sid]))
    expect(left.map((row) => row.sid).sort()).toEqual([atCutoff.sid, live.sid].sort())
  })
})
