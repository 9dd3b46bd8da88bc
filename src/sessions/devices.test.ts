import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { getConfig } from '../config'
import { createDb } from '../db/client'
import { findSession, insertSession, revokeSessionRows } from '../db/sessions'
import type { SessionDevice } from '../db/sessions'
import { insertUser } from '../db/users'
import { loadTokenKeys } from '../lib/token-keys'
import { verifyToken } from '../lib/tokens'
import type { SessionDeps } from './deps'
import { listDevices, signOutDevice } from './devices'
import type { Caller } from './devices'
import { rotateRefreshToken } from './rotate'
import { startLoginSession } from './start'
import { revocationStoreOf } from './revocation-keys'

const db = createDb({ DB: env.DB })
const config = getConfig(env)
const deps: SessionDeps = { db, revocations: revocationStoreOf(env), keys: await loadTokenKeys(config.tokens), config }
const { accessTtlSeconds, leewaySeconds, refreshTtlSeconds, sessionMaxAgeSeconds } = deps.keys
const HOUR = 3_600_000
const DAY_S = 86_400

// KV counts a key's TTL from the moment it is written, so `now` comes from the real clock here;
// every other time is derived from it and passed explicitly.
const toSeconds = (date: Date): number => Math.floor(date.getTime() / 1000)
const ago = (now: Date, ms: number): Date => new Date(now.getTime() - ms)

async function newUser(now: Date): Promise<number> {
  const username = uniqueName('devices')
  const [row] = await db.batch([
    insertUser(db, { username, email: `${username}@example.com`, passwordHash: 'not-a-hash' }, now),
  ])
  return row[0]!.id
}

function login(userId: number, at: Date, device?: SessionDevice) {
  return startLoginSession(deps, { userId, device }, at)
}

/** A session row started at `createdAt` whose refresh token is still valid at `now` (as if it kept rotating). */
async function longLivedSession(userId: number, createdAt: Date, now: Date): Promise<string> {
  const sid = crypto.randomUUID()
  const refresh = { jti: crypto.randomUUID(), issuedAt: ago(now, HOUR), expiresAt: new Date(now.getTime() + HOUR) }
  await db.batch([insertSession(db, { sid, userId, refresh, device: undefined }, createdAt)])
  return sid
}

const sidsOf = async (userId: number, now: Date) => (await listDevices(deps, userId, now)).map((device) => device.sid)
const keyOf = (sid: string) => env.REVOKED_TOKENS.get(`sid:${sid}`)

describe('listDevices', () => {
  it('shows the user’s sessions, most recent activity (last refresh, else login) first', async () => {
    const now = new Date()
    const userId = await newUser(now)
    const a = await login(userId, ago(now, 3 * HOUR))
    const b = await login(userId, ago(now, 2 * HOUR))
    const c = await login(userId, ago(now, HOUR))
    // A refreshes after C's login: its activity is the latest.
    const refresh = await verifyToken(a.pair.refresh_token, 'refresh', deps.keys, ago(now, 3 * HOUR))
    await rotateRefreshToken(deps, refresh, { country: 'FR', colo: 'CDG' }, ago(now, HOUR / 2))

    expect(await sidsOf(userId, now)).toEqual([a.sessionId, c.sessionId, b.sessionId])
  })

  it('breaks a tie of activity by the later login', async () => {
    const now = new Date()
    const userId = await newUser(now)
    const older = await login(userId, ago(now, 2 * HOUR))
    const refresh = await verifyToken(older.pair.refresh_token, 'refresh', deps.keys, ago(now, 2 * HOUR))
    await rotateRefreshToken(deps, refresh, { country: null, colo: null }, ago(now, HOUR))
    const newer = await login(userId, ago(now, HOUR))

    expect(await sidsOf(userId, now)).toEqual([newer.sessionId, older.sessionId])
  })

  it('shows what each session recorded of its device and its last use', async () => {
    const now = new Date()
    const userId = await newUser(now)
    const loginAt = ago(now, HOUR)
    const { sessionId, pair } = await login(userId, loginAt, { label: 'Safari on iOS', country: 'JP', colo: 'NRT' })
    const refresh = await verifyToken(pair.refresh_token, 'refresh', deps.keys, loginAt)
    await rotateRefreshToken(deps, refresh, { country: 'KR', colo: 'ICN' }, ago(now, 1_000))

    expect(await listDevices(deps, userId, now)).toEqual([
      {
        sid: sessionId,
        createdAt: loginAt,
        lastUsedAt: ago(now, 1_000),
        deviceLabel: 'Safari on iOS',
        loginCountry: 'JP',
        loginColo: 'NRT',
        lastCountry: 'KR',
        lastColo: 'ICN',
      },
    ])
  })

  it('leaves out revoked sessions, expired refresh tokens, sessions older than SESSION_MAX_AGE and other users’', async () => {
    const now = new Date()
    const userId = await newUser(now)
    const live = await login(userId, ago(now, HOUR))
    const revoked = await login(userId, ago(now, HOUR))
    await db.batch([
      revokeSessionRows(db, userId, { only: [revoked.sessionId] }, { refreshExpiredAfter: ago(now, HOUR) }, now),
    ])
    // Its refresh token expires exactly now: no longer refreshable.
    await login(userId, ago(now, refreshTtlSeconds * 1000))
    const youngEnough = await longLivedSession(userId, ago(now, sessionMaxAgeSeconds * 1000 - 1), now)
    await longLivedSession(userId, ago(now, sessionMaxAgeSeconds * 1000), now)
    await login(await newUser(now), ago(now, HOUR))

    expect((await sidsOf(userId, now)).sort()).toEqual([live.sessionId, youngEnough].sort())
  })
})

describe('signOutDevice', () => {
  async function signedIn(now: Date) {
    const userId = await newUser(now)
    const own = await login(userId, ago(now, 2 * HOUR))
    const caller: Caller = { userId, sessionId: own.sessionId, expiresAt: toSeconds(now) + 300 }
    return { userId, caller }
  }

  it('ends another session of the caller: revoked in D1 and KV, the caller’s own left alone', async () => {
    const now = new Date()
    const { userId, caller } = await signedIn(now)
    const phone = await login(userId, ago(now, HOUR))

    expect(await signOutDevice(deps, caller, phone.sessionId, now)).toBe(true)

    expect((await findSession(db, phone.sessionId))?.revokedAt).toEqual(now)
    expect(await keyOf(phone.sessionId)).toBe('signed out from another session')
    expect((await findSession(db, caller.sessionId))?.revokedAt).toBeNull()
    expect(await keyOf(caller.sessionId)).toBeNull()
  })

  it('ends the caller’s own session as logout does, its key outliving the caller’s token', async () => {
    const now = new Date()
    const { caller } = await signedIn(now)
    const longToken = { ...caller, expiresAt: toSeconds(now) + 10 * DAY_S }

    expect(await signOutDevice(deps, longToken, caller.sessionId, now)).toBe(true)

    expect((await findSession(db, caller.sessionId))?.revokedAt).toEqual(now)
    expect(await keyOf(caller.sessionId)).toBe('logout')
    const { keys } = await env.REVOKED_TOKENS.list({ prefix: `sid:${caller.sessionId}` })
    expect(keys[0]?.expiration).toBeGreaterThanOrEqual(longToken.expiresAt)
  })

  it('answers false for another user’s session and leaves it alone in D1 and KV', async () => {
    const now = new Date()
    const { caller } = await signedIn(now)
    const stranger = await login(await newUser(now), ago(now, HOUR))

    expect(await signOutDevice(deps, caller, stranger.sessionId, now)).toBe(false)

    expect((await findSession(db, stranger.sessionId))?.revokedAt).toBeNull()
    expect(await keyOf(stranger.sessionId)).toBeNull()
  })

  it('answers false for an unknown sid, writing no key for it', async () => {
    const now = new Date()
    const { caller } = await signedIn(now)
    const unknown = crypto.randomUUID()

    expect(await signOutDevice(deps, caller, unknown, now)).toBe(false)
    expect(await keyOf(unknown)).toBeNull()
  })

  it('ends a session past SESSION_MAX_AGE whose last access token may still live', async () => {
    const now = new Date()
    const { userId, caller } = await signedIn(now)
    const pastMaxAge = await longLivedSession(userId, ago(now, sessionMaxAgeSeconds * 1000 + 1_000), now)

    expect(await signOutDevice(deps, caller, pastMaxAge, now)).toBe(true)
    expect((await findSession(db, pastMaxAge))?.revokedAt).toEqual(now)
    expect(await keyOf(pastMaxAge)).toBe('signed out from another session')
  })

  it('answers false for a session that already ended (revoked, or no token of it can work any more)', async () => {
    const now = new Date()
    const { userId, caller } = await signedIn(now)
    const revoked = await login(userId, ago(now, HOUR))
    await signOutDevice(deps, caller, revoked.sessionId, ago(now, 1_000))
    // An access token lives at most this long after the refresh (or the login) that minted it.
    const lastAccessMs = (accessTtlSeconds + leewaySeconds) * 1000
    const expired = await login(userId, ago(now, refreshTtlSeconds * 1000 + lastAccessMs + 1_000))
    const tooOld = await longLivedSession(userId, ago(now, sessionMaxAgeSeconds * 1000 + lastAccessMs + 1_000), now)

    expect(await signOutDevice(deps, caller, revoked.sessionId, now)).toBe(false)
    expect(await signOutDevice(deps, caller, expired.sessionId, now)).toBe(false)
    expect(await signOutDevice(deps, caller, tooOld, now)).toBe(false)
    // The first sign-out's revocation time stands.
    expect((await findSession(db, revoked.sessionId))?.revokedAt).toEqual(ago(now, 1_000))
    expect(await keyOf(expired.sessionId)).toBeNull()
    expect(await keyOf(tooOld)).toBeNull()
  })
})
