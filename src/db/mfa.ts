import { and, eq, isNotNull, isNull, lt, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { guardThat, isGuardFailure } from './guards'
import type { BatchStatements, Db } from './client'
import { mfaChallenges, mfaFactors, mfaRecoveryCodes, users } from './schema'
import type { MfaFactorRow, UserRow } from './schema'

// Two-factor sign-in data: one TOTP factor per user (pending until confirmed) and its recovery
// codes. Secrets arrive sealed (src/lib/secret-box.ts) and codes hashed (src/lib/recovery-codes.ts):
// nothing here ever sees either in the clear.

/** Wrong codes allowed per window before the factor refuses every code until the window ends. */
export const MFA_FAILURE_LIMIT = { attempts: 5, windowMs: 15 * 60_000 }

export async function findFactor(db: Db, userId: number): Promise<MfaFactorRow | undefined> {
  return db.query.mfaFactors.findFirst({ where: eq(mfaFactors.userId, userId) })
}

/** A user's factor by user id: a statement to batch. */
export function factorRow(db: Db, userId: number) {
  return db.select().from(mfaFactors).where(eq(mfaFactors.userId, userId))
}

/** A user and their factor, in one round trip. */
export async function findUserWithFactor(
  db: Db,
  userId: number,
): Promise<{ user: UserRow | undefined; factor: MfaFactorRow | undefined }> {
  const [user, factor] = await db.batch([db.select().from(users).where(eq(users.id, userId)), factorRow(db, userId)])
  return { user: user[0], factor: factor[0] }
}

/** Stores a new, unconfirmed factor, replacing an unconfirmed one; never a confirmed one. */
export async function savePendingFactor(db: Db, userId: number, secretSealed: string, now: Date): Promise<boolean> {
  const saved = await db
    .insert(mfaFactors)
    .values({ userId, secretSealed, createdAt: now })
    .onConflictDoUpdate({
      target: mfaFactors.userId,
      set: { secretSealed, createdAt: now, lastStep: null, failedAttempts: 0, failedWindowStart: null },
      setWhere: isNull(mfaFactors.confirmedAt),
    })
    .returning({ userId: mfaFactors.userId })
  return saved.length === 1
}

/**
 * Accepts time step `step` for the user's factor, once: of two uses of one code (or of any code of
 * an earlier step) exactly one succeeds. `pending`: the enrolment's first code (the factor is turned
 * on by confirmFactor, in the batch that completes the enrolment).
 */
export async function acceptStep(db: Db, userId: number, step: number, pending: boolean): Promise<boolean> {
  const accepted = await db
    .update(mfaFactors)
    .set({
      lastStep: step,
      failedAttempts: 0,
      failedWindowStart: null,
    })
    .where(
      and(
        eq(mfaFactors.userId, userId),
        pending ? isNull(mfaFactors.confirmedAt) : isNotNull(mfaFactors.confirmedAt),
        or(isNull(mfaFactors.lastStep), lt(mfaFactors.lastStep, step)),
      ),
    )
    .returning({ userId: mfaFactors.userId })
  return accepted.length === 1
}

/**
 * The statement that turns a pending factor on, for the batch that also ends the other sessions
 * and stores the recovery codes: if that batch fails, the enrolment stays pending and the next
 * code confirms it.
 */
export function confirmFactor(db: Db, userId: number, now: Date): BatchItem<'sqlite'> {
  return db
    .update(mfaFactors)
    .set({ confirmedAt: now })
    .where(and(eq(mfaFactors.userId, userId), isNull(mfaFactors.confirmedAt)))
}

/** Seconds until the factor takes codes again, or 0 while fewer than the limit of wrong codes were tried. */
export function lockedForSeconds(factor: MfaFactorRow, now: Date): number {
  const started = factor.failedWindowStart?.getTime()
  if (started === undefined || factor.failedAttempts < MFA_FAILURE_LIMIT.attempts) return 0
  const ends = started + MFA_FAILURE_LIMIT.windowMs
  return ends > now.getTime() ? Math.ceil((ends - now.getTime()) / 1000) : 0
}

/**
 * Counts an attempt at a code before the code is checked, atomically: of any number of concurrent
 * attempts, at most MFA_FAILURE_LIMIT.attempts a window get through; the rest find the factor
 * locked (false). A window starts anew once the last one is over; a correct code clears the count
 * (acceptStep, spendRecoveryCode), so only wrong codes add up.
 */
export async function reserveCodeAttempt(db: Db, userId: number, now: Date): Promise<boolean> {
  return (await codeAttemptReservation(db, userId, now)).length === 1
}

/** The statement of reserveCodeAttempt, to batch: it returns a row when the attempt got through. */
export function codeAttemptReservation(db: Db, userId: number, now: Date) {
  const windowOver = sql`(${mfaFactors.failedWindowStart} is null or ${mfaFactors.failedWindowStart} <= ${now.getTime() - MFA_FAILURE_LIMIT.windowMs})`
  return db
    .update(mfaFactors)
    .set({
      failedAttempts: sql`case when ${windowOver} then 1 else ${mfaFactors.failedAttempts} + 1 end`,
      failedWindowStart: sql`case when ${windowOver} then ${now.getTime()} else ${mfaFactors.failedWindowStart} end`,
    })
    .where(
      and(eq(mfaFactors.userId, userId), or(windowOver, lt(mfaFactors.failedAttempts, MFA_FAILURE_LIMIT.attempts))),
    )
    .returning({ userId: mfaFactors.userId })
}

/** Codes one MFA token may try before it is spent, right or wrong. */
export const MFA_CHALLENGE_ATTEMPTS = 5

/**
 * Counts an attempt against one MFA token (the first step of a login): false once the token has
 * signed in or used up its attempts, so a token is good for one sign-in and a few codes.
 */
export async function reserveChallengeAttempt(
  db: Db,
  challenge: { jti: string; userId: number; expiresAt: Date },
): Promise<boolean> {
  return (await challengeAttemptReservation(db, challenge)).length === 1
}

/**
 * The statement of reserveChallengeAttempt, to batch: it returns a row when the attempt got
 * through, and inserts nothing for a user without a factor (so it never fails a batch).
 */
export function challengeAttemptReservation(db: Db, challenge: { jti: string; userId: number; expiresAt: Date }) {
  // Every column, in the table's order (drizzle's insert … select).
  const first = sql`select ${challenge.jti}, ${challenge.userId}, 1, null, ${challenge.expiresAt.getTime()} from ${mfaFactors} where ${mfaFactors.userId} = ${challenge.userId}`
  return db
    .insert(mfaChallenges)
    .select(first)
    .onConflictDoUpdate({
      target: mfaChallenges.jti,
      set: { attempts: sql`${mfaChallenges.attempts} + 1` },
      setWhere: and(
        isNull(mfaChallenges.usedAt),
        eq(mfaChallenges.userId, challenge.userId),
        lt(mfaChallenges.attempts, MFA_CHALLENGE_ATTEMPTS),
      ),
    })
    .returning({ jti: mfaChallenges.jti })
}

/** The statement that spends an MFA token once it signed in: for the batch that starts the session. */
export function spendChallenge(db: Db, jti: string, now: Date): BatchItem<'sqlite'> {
  return db.update(mfaChallenges).set({ usedAt: now }).where(eq(mfaChallenges.jti, jti))
}

/** Deletes MFA token records that expired before `cutoff` (the cron). */
export function pruneChallenges(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(mfaChallenges).where(lt(mfaChallenges.expiresAt, cutoff))
}

/** Statements that replace every recovery code of the user by these hashes. */
export function replaceRecoveryCodes(db: Db, userId: number, hashes: string[], now: Date): BatchStatements {
  return [
    db.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId)),
    db.insert(mfaRecoveryCodes).values(hashes.map((codeHash) => ({ codeHash, userId, createdAt: now }))),
  ]
}

/** The statement that records whether the account's address was unverified when the factor was added. */
export function recordFactorProvenance(db: Db, userId: number, addedWhileUnverified: boolean): BatchItem<'sqlite'> {
  return db.update(mfaFactors).set({ addedWhileUnverified }).where(eq(mfaFactors.userId, userId))
}

/** The statement that marks the account as having a second factor (or not). */
export function setMfaEnabled(db: Db, userId: number, enabled: boolean, now: Date): BatchItem<'sqlite'> {
  return db.update(users).set({ mfaEnabled: enabled, updatedAt: now }).where(eq(users.id, userId))
}

/** Statements that remove the factor and its recovery codes. */
export function removeFactor(db: Db, userId: number): BatchStatements {
  return [
    db.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId)),
    db.delete(mfaFactors).where(eq(mfaFactors.userId, userId)),
  ]
}

/** Whether the user has this recovery code, unused (checked before its spend is batched). */
export async function hasUnusedRecoveryCode(db: Db, userId: number, codeHash: string): Promise<boolean> {
  const [row] = await db
    .select({ codeHash: mfaRecoveryCodes.codeHash })
    .from(mfaRecoveryCodes)
    .where(
      and(
        eq(mfaRecoveryCodes.codeHash, codeHash),
        eq(mfaRecoveryCodes.userId, userId),
        isNull(mfaRecoveryCodes.usedAt),
      ),
    )
  return row !== undefined
}

/**
 * The statements that spend a recovery code of the user and clear the wrong-code count (as a
 * correct TOTP code does), for the batch of what the code allows (a session, a fresh sign-in
 * time, the factor's removal): the guard fails that batch unless this very batch spent the code,
 * so of two concurrent uses one lands, and a batch that fails leaves the code unspent.
 */
export function recoveryCodeSpend(db: Db, userId: number, codeHash: string, now: Date): BatchStatements {
  return [
    db
      .update(mfaRecoveryCodes)
      .set({ usedAt: now })
      .where(
        and(
          eq(mfaRecoveryCodes.codeHash, codeHash),
          eq(mfaRecoveryCodes.userId, userId),
          isNull(mfaRecoveryCodes.usedAt),
        ),
      ),
    // changes(): the rows the UPDATE just before it modified, in this batch's transaction.
    guardThat(db, sql`changes() = 1`),
    db.update(mfaFactors).set({ failedAttempts: 0, failedWindowStart: null }).where(eq(mfaFactors.userId, userId)),
  ]
}

/** Spends a recovery code of the user on its own; false when it is unknown or already used. */
export async function spendRecoveryCode(db: Db, userId: number, codeHash: string, now: Date): Promise<boolean> {
  try {
    await db.batch(recoveryCodeSpend(db, userId, codeHash, now))
    return true
  } catch (err) {
    if (isGuardFailure(err)) return false
    throw err
  }
}

/**
 * Statements that remove the user's factor and its recovery codes, and turn two-factor sign-in
 * off, if the factor was added while the account's address was unverified (`userId` may be a
 * subquery); otherwise they change nothing.
 */
export function removeFactorAddedWhileUnverified(db: Db, userId: number | SQL): BatchStatements {
  const unverified = sql`exists (select 1 from ${mfaFactors} where ${mfaFactors.userId} = ${userId} and ${mfaFactors.addedWhileUnverified} = 1)`
  return [
    db.delete(mfaRecoveryCodes).where(and(eq(mfaRecoveryCodes.userId, userId), unverified)),
    db
      .update(users)
      .set({ mfaEnabled: false })
      .where(and(eq(users.id, userId), unverified)),
    db.delete(mfaFactors).where(and(eq(mfaFactors.userId, userId), eq(mfaFactors.addedWhileUnverified, true))),
  ]
}
