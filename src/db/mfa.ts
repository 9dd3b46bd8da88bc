import { and, eq, isNotNull, isNull, lt, or, sql } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { BatchStatements, Db } from './client'
import { mfaFactors, mfaRecoveryCodes, users } from './schema'
import type { MfaFactorRow, UserRow } from './schema'

// Two-factor sign-in data: one TOTP factor per user (pending until confirmed) and its recovery
// codes. Secrets arrive sealed (src/lib/secret-box.ts) and codes hashed (src/lib/recovery-codes.ts):
// nothing here ever sees either in the clear.

/** Wrong codes allowed per window before the factor refuses every code until the window ends. */
export const MFA_FAILURE_LIMIT = { attempts: 5, windowMs: 15 * 60_000 }

export async function findFactor(db: Db, userId: number): Promise<MfaFactorRow | undefined> {
  return db.query.mfaFactors.findFirst({ where: eq(mfaFactors.userId, userId) })
}

/** A user and their factor, in one round trip (the login's second step). */
export async function findUserWithFactor(
  db: Db,
  userId: number,
): Promise<{ user: UserRow | undefined; factor: MfaFactorRow | undefined }> {
  const [user, factor] = await db.batch([
    db.select().from(users).where(eq(users.id, userId)),
    db.select().from(mfaFactors).where(eq(mfaFactors.userId, userId)),
  ])
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
 * an earlier step) exactly one succeeds. `pending`: the enrolment's first code.
 */
export async function acceptStep(db: Db, userId: number, step: number, now: Date, pending: boolean): Promise<boolean> {
  const accepted = await db
    .update(mfaFactors)
    .set({
      lastStep: step,
      failedAttempts: 0,
      failedWindowStart: null,
      ...(pending ? { confirmedAt: now } : {}),
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

/** Seconds until the factor takes codes again, or 0 while fewer than the limit of wrong codes were tried. */
export function lockedForSeconds(factor: MfaFactorRow, now: Date): number {
  const started = factor.failedWindowStart?.getTime()
  if (started === undefined || factor.failedAttempts < MFA_FAILURE_LIMIT.attempts) return 0
  const ends = started + MFA_FAILURE_LIMIT.windowMs
  return ends > now.getTime() ? Math.ceil((ends - now.getTime()) / 1000) : 0
}

/** Counts a wrong code: a new window starts when the last one is over. */
export async function recordWrongCode(db: Db, userId: number, now: Date): Promise<void> {
  const windowOver = sql`${mfaFactors.failedWindowStart} is null or ${mfaFactors.failedWindowStart} <= ${now.getTime() - MFA_FAILURE_LIMIT.windowMs}`
  await db
    .update(mfaFactors)
    .set({
      failedAttempts: sql`case when ${windowOver} then 1 else ${mfaFactors.failedAttempts} + 1 end`,
      failedWindowStart: sql`case when ${windowOver} then ${now.getTime()} else ${mfaFactors.failedWindowStart} end`,
    })
    .where(eq(mfaFactors.userId, userId))
}

/** Statements that replace every recovery code of the user by these hashes. */
export function replaceRecoveryCodes(db: Db, userId: number, hashes: string[], now: Date): BatchStatements {
  return [
    db.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId)),
    db.insert(mfaRecoveryCodes).values(hashes.map((codeHash) => ({ codeHash, userId, createdAt: now }))),
  ]
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

/** Spends a recovery code of the user; false when it is unknown or already used. */
export async function spendRecoveryCode(db: Db, userId: number, codeHash: string, now: Date): Promise<boolean> {
  const spent = await db
    .update(mfaRecoveryCodes)
    .set({ usedAt: now })
    .where(
      and(
        eq(mfaRecoveryCodes.codeHash, codeHash),
        eq(mfaRecoveryCodes.userId, userId),
        isNull(mfaRecoveryCodes.usedAt),
      ),
    )
    .returning({ codeHash: mfaRecoveryCodes.codeHash })
  return spent.length === 1
}
