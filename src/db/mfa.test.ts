import { env } from 'cloudflare:workers'
import { eq } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import {
  MFA_FAILURE_LIMIT,
  acceptStep,
  confirmFactor,
  findFactor,
  findUserWithFactor,
  lockedForSeconds,
  reserveChallengeAttempt,
  reserveCodeAttempt,
  spendChallenge,
  removeFactor,
  replaceRecoveryCodes,
  savePendingFactor,
  setMfaEnabled,
  spendRecoveryCode,
} from './mfa'
import { mfaChallenges, mfaRecoveryCodes } from './schema'
import type { MfaFactorRow } from './schema'
import { findUserById, insertUser } from './users'

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const WINDOW = MFA_FAILURE_LIMIT.windowMs
const at = (ms: number): Date => new Date(T0.getTime() + ms)

async function newUser(): Promise<number> {
  const username = uniqueName('mfa')
  const [rows] = await db.batch([insertUser(db, { username, email: `${username}@example.com`, passwordHash: 'h' }, T0)])
  return rows[0]!.id
}

/** A user with a factor: pending, or confirmed by its first code at step 100. */
async function withFactor(state: 'pending' | 'confirmed'): Promise<number> {
  const userId = await newUser()
  await savePendingFactor(db, userId, 'sealed-secret', T0)
  if (state === 'confirmed') {
    expect(await acceptStep(db, userId, 100, true)).toBe(true)
    await db.batch([confirmFactor(db, userId, T0)])
  }
  return userId
}

async function codesOf(userId: number) {
  const rows = await db.select().from(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId))
  return rows.map((row) => row.codeHash).sort()
}

describe('savePendingFactor', () => {
  it('stores an unconfirmed factor', async () => {
    const userId = await newUser()
    expect(await savePendingFactor(db, userId, 'sealed-1', T0)).toBe(true)
    expect(await findFactor(db, userId)).toEqual({
      userId,
      secretSealed: 'sealed-1',
      createdAt: T0,
      confirmedAt: null,
      lastStep: null,
      failedAttempts: 0,
      failedWindowStart: null,
      addedWhileUnverified: false,
    })
  })

  it('replaces an unconfirmed factor, its step and wrong-code count included', async () => {
    const userId = await withFactor('pending')
    await reserveCodeAttempt(db, userId, T0)
    expect(await savePendingFactor(db, userId, 'sealed-2', at(1_000))).toBe(true)
    expect(await findFactor(db, userId)).toMatchObject({
      secretSealed: 'sealed-2',
      createdAt: at(1_000),
      failedAttempts: 0,
      failedWindowStart: null,
    })
  })

  it('never replaces a confirmed factor', async () => {
    const userId = await withFactor('confirmed')
    const before = await findFactor(db, userId)
    expect(await savePendingFactor(db, userId, 'attacker-secret', at(1_000))).toBe(false)
    expect(await findFactor(db, userId)).toEqual(before)
  })
})

describe('acceptStep', () => {
  it('with `pending`, takes the first code of an unconfirmed factor, which confirmFactor then turns on', async () => {
    const userId = await withFactor('pending')
    expect(await acceptStep(db, userId, 100, true)).toBe(true)
    expect(await findFactor(db, userId)).toMatchObject({ confirmedAt: null, lastStep: 100 })
    // The code is spent even while the enrolment is still pending (a failed confirm batch): the next one works.
    expect(await acceptStep(db, userId, 100, true)).toBe(false)
    expect(await acceptStep(db, userId, 101, true)).toBe(true)
    await db.batch([confirmFactor(db, userId, at(1_000))])
    expect(await findFactor(db, userId)).toMatchObject({ confirmedAt: at(1_000), lastStep: 101 })
    expect(await acceptStep(db, userId, 102, true)).toBe(false)
  })

  it('matches the factor’s state: a pending factor takes no sign-in code, nor a user without a factor', async () => {
    const pendingUser = await withFactor('pending')
    expect(await acceptStep(db, pendingUser, 100, false)).toBe(false)
    expect(await acceptStep(db, await newUser(), 100, false)).toBe(false)
  })

  it('accepts each step once and only steps after the last accepted one', async () => {
    const userId = await withFactor('confirmed')
    expect(await acceptStep(db, userId, 100, false)).toBe(false)
    expect(await acceptStep(db, userId, 99, false)).toBe(false)
    expect(await acceptStep(db, userId, 101, false)).toBe(true)
    expect(await acceptStep(db, userId, 101, false)).toBe(false)
    expect(await acceptStep(db, userId, 103, false)).toBe(true)
    expect(await acceptStep(db, userId, 102, false)).toBe(false)
    expect((await findFactor(db, userId))?.lastStep).toBe(103)
  })

  it('of two concurrent uses of one code, exactly one succeeds', async () => {
    const userId = await withFactor('confirmed')
    const results = await Promise.all([1, 2].map(() => acceptStep(db, userId, 200, false)))
    expect(results.sort()).toEqual([false, true])
  })

  it('clears the wrong-code count', async () => {
    const userId = await withFactor('confirmed')
    await reserveCodeAttempt(db, userId, T0)
    await reserveCodeAttempt(db, userId, T0)
    await acceptStep(db, userId, 101, false)
    expect(await findFactor(db, userId)).toMatchObject({ failedAttempts: 0, failedWindowStart: null })
  })
})

describe('lockedForSeconds', () => {
  const factor = (failedAttempts: number, failedWindowStart: Date | null): MfaFactorRow => ({
    userId: 1,
    secretSealed: 's',
    createdAt: T0,
    confirmedAt: T0,
    lastStep: null,
    failedAttempts,
    failedWindowStart,
    addedWhileUnverified: false,
  })
  const limit = MFA_FAILURE_LIMIT.attempts

  it('is 0 below the limit of wrong codes, or without a window', () => {
    expect(lockedForSeconds(factor(limit - 1, T0), at(1_000))).toBe(0)
    expect(lockedForSeconds(factor(limit, null), at(1_000))).toBe(0)
  })

  it('at the limit, counts the seconds left in the window (rounded up), 0 once it ended', () => {
    expect(lockedForSeconds(factor(limit, T0), T0)).toBe(WINDOW / 1000)
    expect(lockedForSeconds(factor(limit, T0), at(WINDOW - 1_500))).toBe(2)
    expect(lockedForSeconds(factor(limit, T0), at(WINDOW - 1))).toBe(1)
    expect(lockedForSeconds(factor(limit + 3, T0), at(WINDOW))).toBe(0)
  })
})

describe('reserveCodeAttempt', () => {
  it('counts attempts in a window that starts with the first; at the limit it refuses, and the factor is locked', async () => {
    const userId = await withFactor('confirmed')
    for (let i = 0; i < MFA_FAILURE_LIMIT.attempts; i += 1) {
      expect(await reserveCodeAttempt(db, userId, at(i * 1_000))).toBe(true)
    }
    expect(await reserveCodeAttempt(db, userId, at(5_000))).toBe(false)

    const factor = await findFactor(db, userId)
    expect(factor).toMatchObject({ failedAttempts: MFA_FAILURE_LIMIT.attempts, failedWindowStart: T0 })
    expect(lockedForSeconds(factor!, at(5_000))).toBe(WINDOW / 1000 - 5)
  })

  it('lets through at most the limit of a burst of concurrent attempts', async () => {
    const userId = await withFactor('confirmed')
    const results = await Promise.all(Array.from({ length: 20 }, () => reserveCodeAttempt(db, userId, T0)))
    expect(results.filter(Boolean)).toHaveLength(MFA_FAILURE_LIMIT.attempts)
  })

  it('starts a new window once the last one is over', async () => {
    const userId = await withFactor('confirmed')
    await reserveCodeAttempt(db, userId, T0)
    await reserveCodeAttempt(db, userId, at(WINDOW - 1))
    expect(await findFactor(db, userId)).toMatchObject({ failedAttempts: 2, failedWindowStart: T0 })

    await reserveCodeAttempt(db, userId, at(WINDOW))
    expect(await findFactor(db, userId)).toMatchObject({ failedAttempts: 1, failedWindowStart: at(WINDOW) })
  })
})

describe('MFA challenges (one per MFA token)', () => {
  const challengeOf = (userId: number) => ({ jti: crypto.randomUUID(), userId, expiresAt: at(300_000) })

  it('takes MFA_CHALLENGE_ATTEMPTS attempts, then refuses', async () => {
    const challenge = challengeOf(await withFactor('confirmed'))
    const results = await Promise.all(Array.from({ length: 8 }, () => reserveChallengeAttempt(db, challenge)))
    expect(results.filter(Boolean)).toHaveLength(5)
  })

  it('records nothing for a user without a factor', async () => {
    const challenge = challengeOf(await newUser())
    expect(await reserveChallengeAttempt(db, challenge)).toBe(false)
    expect(await db.select().from(mfaChallenges).where(eq(mfaChallenges.jti, challenge.jti))).toEqual([])
  })

  it('is spent by a sign-in: no attempt after it', async () => {
    const challenge = challengeOf(await withFactor('confirmed'))
    expect(await reserveChallengeAttempt(db, challenge)).toBe(true)
    await db.batch([spendChallenge(db, challenge.jti, T0)])
    expect(await reserveChallengeAttempt(db, challenge)).toBe(false)
  })

  it('belongs to one user: the same jti for another user is refused', async () => {
    const challenge = challengeOf(await withFactor('confirmed'))
    expect(await reserveChallengeAttempt(db, challenge)).toBe(true)
    expect(await reserveChallengeAttempt(db, { ...challenge, userId: await withFactor('confirmed') })).toBe(false)
    const rows = await db.select().from(mfaChallenges).where(eq(mfaChallenges.jti, challenge.jti))
    expect(rows).toMatchObject([{ attempts: 1, userId: challenge.userId }])
  })
})

describe('recovery codes', () => {
  it('replaceRecoveryCodes replaces every code of the user and no one else’s', async () => {
    const userId = await withFactor('confirmed')
    const other = await withFactor('confirmed')
    const tag = uniqueName('code')
    await db.batch(replaceRecoveryCodes(db, userId, [`${tag}-a`, `${tag}-b`], T0))
    await db.batch(replaceRecoveryCodes(db, other, [`${tag}-x`], T0))
    await db.batch(replaceRecoveryCodes(db, userId, [`${tag}-c`], at(1_000)))

    expect(await codesOf(userId)).toEqual([`${tag}-c`])
    expect(await codesOf(other)).toEqual([`${tag}-x`])
  })

  it('spendRecoveryCode spends a code of the user once; another user’s code or an unknown one never', async () => {
    const userId = await withFactor('confirmed')
    const other = await withFactor('confirmed')
    const tag = uniqueName('code')
    await db.batch(replaceRecoveryCodes(db, userId, [`${tag}-a`, `${tag}-b`], T0))
    await db.batch(replaceRecoveryCodes(db, other, [`${tag}-x`], T0))

    expect(await spendRecoveryCode(db, userId, `${tag}-a`, at(1_000))).toBe(true)
    expect(await spendRecoveryCode(db, userId, `${tag}-a`, at(2_000))).toBe(false)
    expect(await spendRecoveryCode(db, userId, `${tag}-x`, at(2_000))).toBe(false)
    expect(await spendRecoveryCode(db, userId, `${tag}-unknown`, at(2_000))).toBe(false)
    expect(await spendRecoveryCode(db, other, `${tag}-x`, at(2_000))).toBe(true)
    const results = await Promise.all([1, 2].map(() => spendRecoveryCode(db, userId, `${tag}-b`, at(3_000))))
    expect(results.sort()).toEqual([false, true])
  })
})

describe('setMfaEnabled, findUserWithFactor and removeFactor', () => {
  it('flag the account, read it with its factor, and remove the factor with its codes', async () => {
    const userId = await withFactor('confirmed')
    await db.batch([setMfaEnabled(db, userId, true, at(1_000))])
    await db.batch(replaceRecoveryCodes(db, userId, [uniqueName('code')], T0))

    const found = await findUserWithFactor(db, userId)
    expect(found.user).toMatchObject({ id: userId, mfaEnabled: true, updatedAt: at(1_000) })
    expect(found.factor).toMatchObject({ userId, confirmedAt: T0 })

    await db.batch([...removeFactor(db, userId), setMfaEnabled(db, userId, false, at(2_000))])
    expect(await findUserWithFactor(db, userId)).toMatchObject({ user: { mfaEnabled: false }, factor: undefined })
    expect(await codesOf(userId)).toEqual([])
    expect((await findUserById(db, userId))?.mfaEnabled).toBe(false)
  })
})
