import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { getConfig } from '../config'
import { createDb } from '../db/client'
import { findSession, revokeSessionRows } from '../db/sessions'
import { insertUser } from '../db/users'
import { loadTokenKeys } from '../lib/token-keys'
import { verifyToken } from '../lib/tokens'
import type { TokenClaims, TokenPair } from '../lib/tokens'
import type { SessionDeps } from './deps'
import { isCurrentRefreshToken, rotateRefreshToken } from './rotate'
import { startLoginSession } from './start'
import { encodeRevocationFilter } from './revocation-filter'
import { isSessionRevoked, revocationStoreOf } from './revocation-keys'
import { DependencyUnavailable } from '../lib/outages'

const db = createDb({ DB: env.DB })

/** Session deps over the real bindings, with the configuration of `overrides` applied to env. */
async function depsWith(overrides: Record<string, string> = {}): Promise<SessionDeps> {
  const config = getConfig({ ...env, ...overrides })
  return { db, revocations: revocationStoreOf(env), keys: await loadTokenKeys(config.tokens), config }
}

const deps = await depsWith()
const noGrace = await depsWith({ REFRESH_REUSE_GRACE: '0' })
const oneHourSessions = await depsWith({ SESSION_MAX_AGE: '3600' })
const GRACE_MS = deps.config.tokens.reuseGraceSeconds * 1000
const SEEN = { country: 'DE', colo: 'FRA' }
const T0 = new Date('2026-03-01T10:00:00.000Z')

/** `T0` plus `ms`: every test passes time explicitly. */
const at = (ms: number): Date => new Date(T0.getTime() + ms)

async function newUser(): Promise<number> {
  const username = uniqueName('rotate')
  const [row] = await db.batch([
    insertUser(db, { username, email: `${username}@example.com`, passwordHash: 'not-a-hash' }, T0),
  ])
  return row[0]!.id
}

function refreshClaims(pair: TokenPair, now: Date, sessionDeps: SessionDeps = deps): Promise<TokenClaims> {
  return verifyToken(pair.refresh_token, 'refresh', sessionDeps.keys, now)
}

/** A user logged in at T0: their session and its first refresh token's claims. */
async function loggedIn(sessionDeps: SessionDeps = deps) {
  const userId = await newUser()
  const { pair, sessionId } = await startLoginSession(sessionDeps, { userId }, T0)
  return { userId, sessionId, refresh: await refreshClaims(pair, T0, sessionDeps) }
}

describe('rotateRefreshToken', () => {
  it('swaps the current refresh token for a new one and records the use', async () => {
    const { sessionId, refresh } = await loggedIn()
    const now = at(60_000)

    const pair = await rotateRefreshToken(deps, refresh, SEEN, now)

    const next = await refreshClaims(pair, now)
    const access = await verifyToken(pair.access_token, 'access', deps.keys, now)
    expect(next).toMatchObject({ sub: refresh.sub, sid: sessionId })
    expect(access).toMatchObject({ sub: refresh.sub, sid: sessionId })
    expect(next.jti).not.toBe(refresh.jti)
    expect(await findSession(db, sessionId)).toMatchObject({
      currentJti: next.jti,
      previousJti: refresh.jti,
      refreshIssuedAt: now,
      refreshExpiresAt: new Date(now.getTime() + deps.keys.refreshTtlSeconds * 1000),
      rotatedAt: now,
      lastUsedAt: now,
      lastCountry: 'DE',
      lastColo: 'FRA',
      revokedAt: null,
    })
  })

  it('lets the new token rotate in turn: the family goes on', async () => {
    const { sessionId, refresh } = await loggedIn()
    const second = await refreshClaims(await rotateRefreshToken(deps, refresh, SEEN, at(60_000)), at(60_000))
    const third = await refreshClaims(await rotateRefreshToken(deps, second, SEEN, at(120_000)), at(120_000))
    expect(await findSession(db, sessionId)).toMatchObject({ currentJti: third.jti, previousJti: second.jti })
  })

  it('of concurrent rotations of one token, exactly one mints a new refresh token; the others get it too', async () => {
    const { sessionId, refresh } = await loggedIn()
    const now = at(60_000)

    const pairs = await Promise.all(Array.from({ length: 5 }, () => rotateRefreshToken(deps, refresh, SEEN, now)))

    const session = await findSession(db, sessionId)
    const refreshJtis = await Promise.all(pairs.map(async (pair) => (await refreshClaims(pair, now)).jti))
    expect(new Set(refreshJtis)).toEqual(new Set([session!.currentJti]))
    expect(session).toMatchObject({ previousJti: refresh.jti, revokedAt: null })
    const accessJtis = await Promise.all(
      pairs.map(async (pair) => (await verifyToken(pair.access_token, 'access', deps.keys, now)).jti),
    )
    expect(new Set(accessJtis).size).toBe(5)
  })

  it('without a grace window, concurrent rotations give one pair; the others are reuse and revoke the session', async () => {
    const { sessionId, refresh } = await loggedIn(noGrace)
    const now = at(60_000)

    const outcomes = await Promise.allSettled(
      Array.from({ length: 3 }, () => rotateRefreshToken(noGrace, refresh, SEEN, now)),
    )

    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1)
    const codes = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason.code] : []))
    expect(codes).toContain('token_reused')
    for (const code of codes) expect(['token_reused', 'token_revoked']).toContain(code)
    expect((await findSession(db, sessionId))?.revokedAt).toEqual(now)
    expect(await env.REVOKED_TOKENS.get(`sid:${sessionId}`)).toBe('refresh token reuse')
  })

  describe('the token just rotated (REFRESH_REUSE_GRACE)', () => {
    it('within the window, returns the current refresh token again and a fresh access token', async () => {
      const { sessionId, refresh } = await loggedIn()
      const rotatedAt = at(60_000)
      const first = await rotateRefreshToken(deps, refresh, SEEN, rotatedAt)
      const rowAfterRotation = await findSession(db, sessionId)

      const replay = await rotateRefreshToken(deps, refresh, SEEN, new Date(rotatedAt.getTime() + GRACE_MS))

      // Same claims, same key: the very same refresh token (current jti, iat and exp from the row).
      expect(replay.refresh_token).toBe(first.refresh_token)
      expect(replay.access_token).not.toBe(first.access_token)
      expect(await findSession(db, sessionId)).toEqual(rowAfterRotation)
      expect(await env.REVOKED_TOKENS.get(`sid:${sessionId}`)).toBeNull()
    })

    it('after the window, is reuse: 401 token_reused, and the session revoked in D1 and KV', async () => {
      const { sessionId, refresh } = await loggedIn()
      const rotatedAt = at(60_000)
      const current = await refreshClaims(await rotateRefreshToken(deps, refresh, SEEN, rotatedAt), rotatedAt)
      const late = new Date(rotatedAt.getTime() + GRACE_MS + 1)

      await expect(rotateRefreshToken(deps, refresh, SEEN, late)).rejects.toMatchObject({
        status: 401,
        code: 'token_reused',
      })

      expect((await findSession(db, sessionId))?.revokedAt).toEqual(late)
      expect(await env.REVOKED_TOKENS.get(`sid:${sessionId}`)).toBe('refresh token reuse')
      // The thief's (or owner's) current token dies with the session.
      await expect(rotateRefreshToken(deps, current, SEEN, at(120_000))).rejects.toMatchObject({
        status: 401,
        code: 'token_revoked',
      })
    })

    it('a reuse whose revocation failed half-way (publisher down: 503) is finished by the next refresh attempt', async () => {
      const { sessionId, refresh } = await loggedIn()
      const rotatedAt = at(60_000)
      const current = await refreshClaims(await rotateRefreshToken(deps, refresh, SEEN, rotatedAt), rotatedAt)
      const late = new Date(rotatedAt.getTime() + GRACE_MS + 1)
      const down = {
        idFromName: () => {
          throw new Error('Durable Object is overloaded')
        },
      } as unknown as DurableObjectNamespace
      const publisherDown = { ...deps, revocations: revocationStoreOf(env, { publisher: down }) }
      // Another location: no marker, and a filter copy from before the revocation.
      const before = encodeRevocationFilter([], new Date())
      const elsewhere = revocationStoreOf(env, {
        markers: undefined,
        kv: { get: (key: string) => (key === 'revocations:recent' ? before : env.REVOKED_TOKENS.get(key)) } as never,
      })

      await expect(rotateRefreshToken(publisherDown, refresh, SEEN, late)).rejects.toBeInstanceOf(DependencyUnavailable)
      // D1 has the session revoked; the filter does not: its access tokens would live on.
      expect((await findSession(db, sessionId))?.revokedAt).toEqual(late)
      expect(await isSessionRevoked(elsewhere, sessionId, 60)).toBe(false)

      // (These tests' clock is in the past, so the publisher would drop the entry as expired at its
      // next copy: a recording publisher shows what the retry hands it.)
      const recorded: string[] = []
      const recording = {
        idFromName: (name: string) => name,
        get: () => ({ record: async (entries: { sid: string }[]) => recorded.push(...entries.map((e) => e.sid)) }),
      } as unknown as DurableObjectNamespace
      const retry = { ...deps, revocations: revocationStoreOf(env, { publisher: recording, markers: undefined }) }
      await expect(rotateRefreshToken(retry, current, SEEN, at(GRACE_MS + 120_000))).rejects.toMatchObject({
        status: 401,
        code: 'token_revoked',
      })
      expect(recorded).toEqual([sessionId])
    })

    it('covers only the token rotated last: an older one is reuse even within the window', async () => {
      const { sessionId, refresh } = await loggedIn()
      const second = await refreshClaims(await rotateRefreshToken(deps, refresh, SEEN, at(60_000)), at(60_000))
      await rotateRefreshToken(deps, second, SEEN, at(61_000))

      await expect(rotateRefreshToken(deps, refresh, SEEN, at(62_000))).rejects.toMatchObject({
        code: 'token_reused',
      })
      expect((await findSession(db, sessionId))?.revokedAt).toEqual(at(62_000))
    })

    it('is disabled by REFRESH_REUSE_GRACE=0, even for a replay in the same millisecond', async () => {
      const { sessionId, refresh } = await loggedIn(noGrace)
      const now = at(60_000)
      await rotateRefreshToken(noGrace, refresh, SEEN, now)

      await expect(rotateRefreshToken(noGrace, refresh, SEEN, now)).rejects.toMatchObject({
        status: 401,
        code: 'token_reused',
      })
      expect((await findSession(db, sessionId))?.revokedAt).toEqual(now)
      expect(await env.REVOKED_TOKENS.get(`sid:${sessionId}`)).toBe('refresh token reuse')
    })
  })

  describe('sessions that cannot refresh', () => {
    it('refuses a session D1 does not know: 401 token_invalid', async () => {
      const { refresh } = await loggedIn()
      await expect(
        rotateRefreshToken(deps, { ...refresh, sid: crypto.randomUUID() }, SEEN, at(60_000)),
      ).rejects.toMatchObject({ status: 401, code: 'token_invalid' })
    })

    it('refuses another user’s session (token_invalid) and leaves it as it was', async () => {
      const { sessionId, refresh } = await loggedIn()
      const stranger = await newUser()

      for (const sub of [String(stranger), 'not-a-number']) {
        await expect(rotateRefreshToken(deps, { ...refresh, sub }, SEEN, at(60_000))).rejects.toMatchObject({
          status: 401,
          code: 'token_invalid',
        })
      }
      expect(await findSession(db, sessionId)).toMatchObject({ currentJti: refresh.jti, revokedAt: null })
    })

    it('refuses a revoked session: 401 token_revoked', async () => {
      const { userId, sessionId, refresh } = await loggedIn()
      await db.batch([revokeSessionRows(db, userId, { only: [sessionId] }, { refreshExpiredAfter: T0 }, at(1_000))])

      await expect(rotateRefreshToken(deps, refresh, SEEN, at(60_000))).rejects.toMatchObject({
        status: 401,
        code: 'token_revoked',
      })
    })

    it('refuses a session that reached SESSION_MAX_AGE (token_expired), however recently it rotated', async () => {
      const { sessionId, refresh } = await loggedIn(oneHourSessions)
      const lastMoment = at(3_600_000 - 1)
      const current = await refreshClaims(
        await rotateRefreshToken(oneHourSessions, refresh, SEEN, lastMoment),
        lastMoment,
        oneHourSessions,
      )

      await expect(rotateRefreshToken(oneHourSessions, current, SEEN, at(3_600_000))).rejects.toMatchObject({
        status: 401,
        code: 'token_expired',
      })
      // Too old is not reuse: nothing is revoked.
      expect((await findSession(db, sessionId))?.revokedAt).toBeNull()
    })
  })
})

describe('isCurrentRefreshToken', () => {
  it('is true for the current token of a live session only', async () => {
    const { userId, sessionId, refresh } = await loggedIn()
    expect(await isCurrentRefreshToken(deps, refresh, at(1_000))).toBe(true)

    const next = await refreshClaims(await rotateRefreshToken(deps, refresh, SEEN, at(60_000)), at(60_000))
    expect(await isCurrentRefreshToken(deps, refresh, at(61_000))).toBe(false)
    expect(await isCurrentRefreshToken(deps, next, at(61_000))).toBe(true)
    expect(await isCurrentRefreshToken(deps, { ...next, sub: String(await newUser()) }, at(61_000))).toBe(false)
    expect(await isCurrentRefreshToken(deps, { ...next, sid: crypto.randomUUID() }, at(61_000))).toBe(false)

    await db.batch([revokeSessionRows(db, userId, { only: [sessionId] }, { refreshExpiredAfter: T0 }, at(62_000))])
    expect(await isCurrentRefreshToken(deps, next, at(63_000))).toBe(false)
  })

  it('is false once the session reached SESSION_MAX_AGE', async () => {
    const { refresh } = await loggedIn(oneHourSessions)
    expect(await isCurrentRefreshToken(oneHourSessions, refresh, at(3_600_000 - 1))).toBe(true)
    expect(await isCurrentRefreshToken(oneHourSessions, refresh, at(3_600_000))).toBe(false)
  })
})
