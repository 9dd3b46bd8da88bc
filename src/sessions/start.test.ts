import { env } from 'cloudflare:workers'
import { eq } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { getConfig } from '../config'
import { createDb } from '../db/client'
import { sessions } from '../db/schema'
import { findSession, revokeSessionRows } from '../db/sessions'
import { accountUnchanged, findUserById, insertUser, recordLogin, setPassword } from '../db/users'
import { loadTokenKeys } from '../lib/token-keys'
import { verifyToken } from '../lib/tokens'
import type { SessionDeps } from './deps'
import { newLoginSession, startCheckedLoginSession, startLoginSession } from './start'
import { revocationStoreOf } from './revocation-keys'

const db = createDb({ DB: env.DB })
const config = getConfig(env)
const deps: SessionDeps = { db, revocations: revocationStoreOf(env), keys: await loadTokenKeys(config.tokens), config }
const T0 = new Date('2026-03-01T10:00:00.000Z')
const DEVICE = { label: 'Firefox on macOS', country: 'CH', colo: 'ZRH' }

async function newUser(): Promise<{ id: number; username: string; email: string }> {
  const username = uniqueName('start')
  const email = `${username}@example.com`
  const [row] = await db.batch([insertUser(db, { username, email, passwordHash: 'not-a-hash' }, T0)])
  return { id: row[0]!.id, username, email }
}

function sessionsOf(userId: number) {
  return db.select().from(sessions).where(eq(sessions.userId, userId))
}

describe('newLoginSession', () => {
  it('returns a pair whose claims name the new session and its user', async () => {
    const user = await newUser()
    const { pair, sessionId } = await newLoginSession(deps, { userId: user.id }, T0)

    const access = await verifyToken(pair.access_token, 'access', deps.keys, T0)
    const refresh = await verifyToken(pair.refresh_token, 'refresh', deps.keys, T0)
    const iat = T0.getTime() / 1000
    expect(access).toMatchObject({ sub: String(user.id), sid: sessionId, iat, exp: iat + deps.keys.accessTtlSeconds })
    expect(refresh).toMatchObject({ sub: String(user.id), sid: sessionId, iat, exp: iat + deps.keys.refreshTtlSeconds })
    expect(access.jti).not.toBe(refresh.jti)
    expect(pair).toMatchObject({
      token_type: 'Bearer',
      expires_in: deps.keys.accessTtlSeconds,
      refresh_expires_in: deps.keys.refreshTtlSeconds,
    })
  })

  it('records nothing until its insert runs in a batch; then the row holds the refresh token', async () => {
    const user = await newUser()
    const { pair, sessionId, insert } = await newLoginSession(deps, { userId: user.id, device: DEVICE }, T0)
    expect(await findSession(db, sessionId)).toBeUndefined()

    await db.batch([insert])

    const refresh = await verifyToken(pair.refresh_token, 'refresh', deps.keys, T0)
    expect(await findSession(db, sessionId)).toEqual({
      sid: sessionId,
      userId: user.id,
      currentJti: refresh.jti,
      previousJti: null,
      refreshIssuedAt: new Date(refresh.iat * 1000),
      refreshExpiresAt: new Date(refresh.exp * 1000),
      createdAt: T0,
      rotatedAt: null,
      revokedAt: null,
      deviceLabel: DEVICE.label,
      loginCountry: DEVICE.country,
      loginColo: DEVICE.colo,
      lastUsedAt: null,
      lastCountry: null,
      lastColo: null,
      authenticatedAt: null,
    })
  })

  it('records no label or location for a login without a device', async () => {
    const user = await newUser()
    const { sessionId, insert } = await newLoginSession(deps, { userId: user.id }, T0)
    await db.batch([insert])
    expect(await findSession(db, sessionId)).toMatchObject({ deviceLabel: null, loginCountry: null, loginColo: null })
  })

  it('gives every login a session of its own', async () => {
    const user = await newUser()
    const first = await newLoginSession(deps, { userId: user.id }, T0)
    const second = await newLoginSession(deps, { userId: user.id }, T0)
    expect(second.sessionId).not.toBe(first.sessionId)
    expect(second.pair.refresh_token).not.toBe(first.pair.refresh_token)
  })
})

describe('startLoginSession', () => {
  it('records the session with its device and returns its id', async () => {
    const user = await newUser()
    const { pair, sessionId } = await startLoginSession(deps, { userId: user.id, device: DEVICE }, T0)
    const refresh = await verifyToken(pair.refresh_token, 'refresh', deps.keys, T0)
    expect(refresh.sid).toBe(sessionId)
    expect(await findSession(db, sessionId)).toMatchObject({
      userId: user.id,
      currentJti: refresh.jti,
      deviceLabel: DEVICE.label,
      revokedAt: null,
    })
  })

  it('writes the alongside statements in the same batch as the session', async () => {
    const user = await newUser()
    const { sessionId } = await startLoginSession(
      deps,
      { userId: user.id, alongside: [recordLogin(db, user.id, T0)] },
      T0,
    )
    expect((await findUserById(db, user.id))?.lastLoginAt).toEqual(T0)
    expect(await findSession(db, sessionId)).toBeDefined()
  })

  it('leaves no session row (and no other alongside change) when an alongside statement fails', async () => {
    const user = await newUser()
    // The same email again violates users_email_lower_unique.
    const failing = insertUser(db, { username: uniqueName('dup'), email: user.email, passwordHash: 'x' }, T0)

    await expect(
      startLoginSession(deps, { userId: user.id, alongside: [recordLogin(db, user.id, T0), failing] }, T0),
    ).rejects.toThrow()

    expect(await sessionsOf(user.id)).toEqual([])
    expect((await findUserById(db, user.id))?.lastLoginAt).toBeNull()
  })

  it('runs the alongside statements first: ending every other session in the batch spares the new one', async () => {
    const user = await newUser()
    const old = await startLoginSession(deps, { userId: user.id }, T0)
    const later = new Date(T0.getTime() + 60_000)
    const endAll = revokeSessionRows(db, user.id, 'all', { refreshExpiredAfter: later }, later)

    const fresh = await startLoginSession(deps, { userId: user.id, alongside: [endAll] }, later)

    expect((await findSession(db, old.sessionId))?.revokedAt).toEqual(later)
    expect((await findSession(db, fresh.sessionId))?.revokedAt).toBeNull()
  })
})

describe('startCheckedLoginSession (a password login that read the account at a replica)', () => {
  const T1 = new Date(T0.getTime() + 60_000)
  const start = (user: { id: number }, checkedHash: string) =>
    startCheckedLoginSession(
      deps,
      {
        userId: user.id,
        device: DEVICE,
        accountIsUnchanged: accountUnchanged(user.id, { passwordHash: checkedHash }),
        after: [recordLogin(db, user.id, T1, 'upgraded-hash', { passwordHash: checkedHash })],
      },
      T1,
    )

  it('keeps the session and records the login when the account is as checked', async () => {
    const user = await newUser()
    const session = await start(user, 'not-a-hash')
    expect(session).toBeDefined()
    expect(await findSession(db, session!.sessionId)).toMatchObject({ userId: user.id })
    expect(await findUserById(db, user.id)).toMatchObject({ lastLoginAt: T1, passwordHash: 'upgraded-hash' })
  })

  it('keeps nothing and writes nothing when the password changed since the replica was read', async () => {
    const user = await newUser()
    await db.batch([setPassword(db, user.id, 'the-new-hash', T0)])
    expect(await start(user, 'not-a-hash')).toBeUndefined()
    expect(await sessionsOf(user.id)).toEqual([])
    // The old password's rehash must never overwrite the new password.
    expect(await findUserById(db, user.id)).toMatchObject({ lastLoginAt: null, passwordHash: 'the-new-hash' })
  })

  it('keeps nothing when a second factor was enrolled since (the login must ask for it)', async () => {
    const user = await newUser()
    await env.DB.prepare('UPDATE users SET mfa_enabled = 1 WHERE id = ?').bind(user.id).run()
    expect(await start(user, 'not-a-hash')).toBeUndefined()
    expect(await sessionsOf(user.id)).toEqual([])
  })

  it('keeps nothing for an account deleted since', async () => {
    const user = await newUser()
    await env.DB.prepare('DELETE FROM users WHERE id = ?').bind(user.id).run()
    expect(await start(user, 'not-a-hash')).toBeUndefined()
    expect(await sessionsOf(user.id)).toEqual([])
  })
})
