import { and, asc, count, eq, lt, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { guardThat } from './guards'
import { passkeyChallenges, passkeyUserHandles, passkeys, users } from './schema'
import { keepsAnotherWayIn } from './ways-in'
import type { PasskeyChallengePurpose } from './schema'

// Passkeys, their user handles and the challenges of the options endpoints, as statements to
// batch: every passkey route is one or two round trips to the primary (docs/design.md § Passkeys).

/**
 * The user's handle, made from `candidate` the first time: an insert that keeps an existing one,
 * then the read of whichever is stored. Two statements for the caller's batch.
 */
export function userHandleOf(db: Db, userId: number, candidate: string) {
  return [
    db.insert(passkeyUserHandles).values({ userId, handle: candidate }).onConflictDoNothing(),
    db
      .select({ handle: passkeyUserHandles.handle })
      .from(passkeyUserHandles)
      .where(eq(passkeyUserHandles.userId, userId)),
  ] as const
}

/** The user's passkeys, oldest first: a statement to batch. */
export function passkeysOf(db: Db, userId: number | SQL<number | null>) {
  return db.select().from(passkeys).where(eq(passkeys.userId, userId)).orderBy(asc(passkeys.id))
}

/** How many passkeys the user has: a statement to batch (rows of `{ count }`). */
export function countPasskeys(db: Db, userId: number) {
  return db.select({ count: count() }).from(passkeys).where(eq(passkeys.userId, userId))
}

/** How many passkeys the user has, as a scalar subquery (GET /users/me). */
export function passkeyCountOf(userId: SQL | number): SQL<number> {
  return sql<number>`(select ${count()} from ${passkeys} where ${passkeys.userId} = ${userId})`
}

export function insertChallenge(
  db: Db,
  challenge: {
    id: string
    challenge: string
    purpose: PasskeyChallengePurpose
    userId: number | SQL<number | null> | null
    expiresAt: Date
  },
): BatchItem<'sqlite'> {
  return db.insert(passkeyChallenges).values(challenge)
}

/**
 * Takes a challenge out: it is deleted whatever the caller then decides, so each is tried once.
 * A statement to batch (rows of the challenge; none if unknown or already taken).
 */
export function takeChallenge(db: Db, id: string) {
  return db.delete(passkeyChallenges).where(eq(passkeyChallenges.id, id)).returning()
}

/** The passkey with this credential id, with its owner's handle and second-factor state. */
export function passkeyByCredentialId(db: Db, credentialId: string) {
  return db
    .select({
      passkey: passkeys,
      handle: passkeyUserHandles.handle,
      mfaEnabled: users.mfaEnabled,
    })
    .from(passkeys)
    .innerJoin(users, eq(users.id, passkeys.userId))
    .leftJoin(passkeyUserHandles, eq(passkeyUserHandles.userId, passkeys.userId))
    .where(eq(passkeys.credentialId, credentialId))
}

/**
 * A new passkey; no row when its credential id is registered already (to anyone). Whether it is
 * added while the address is unverified is read in the statement itself: an email change that
 * commits between the handler's read and this insert still counts (docs/design.md § Account
 * squatting).
 */
export function insertPasskey(
  db: Db,
  passkey: Omit<typeof passkeys.$inferInsert, 'id' | 'lastUsedAt' | 'addedWhileUnverified'>,
): BatchItem<'sqlite'> & PromiseLike<(typeof passkeys.$inferSelect)[]> {
  const addedWhileUnverified = sql<boolean>`coalesce((select ${users.emailVerified} = 0 from ${users} where ${users.id} = ${passkey.userId}), 1)`
  return db
    .insert(passkeys)
    .values({ ...passkey, addedWhileUnverified })
    .onConflictDoNothing()
    .returning()
}

/** The user has at most `max` passkeys: a condition for guardThat after an insert. */
export function atMostPasskeys(userId: number, max: number): SQL {
  return sql`${passkeyCountOf(userId)} <= ${max}`
}

/**
 * A sign-in's use of the passkey: the new counter and time, kept only if the counter is still the
 * one the signature was checked against (a compare-and-set), else the guard fails the batch.
 */
export function recordPasskeyUse(
  db: Db,
  use: { id: number; checkedCount: number; signCount: number; backedUp: boolean },
  now: Date,
): [BatchItem<'sqlite'>, BatchItem<'sqlite'>] {
  return [
    db
      .update(passkeys)
      .set({ signCount: use.signCount, lastUsedAt: now, backedUp: use.backedUp })
      .where(and(eq(passkeys.id, use.id), eq(passkeys.signCount, use.checkedCount))),
    // changes(): the rows the UPDATE just before it modified, in this batch's transaction.
    guardThat(db, sql`changes() = 1`),
  ]
}

/** Renames the user's passkey: a statement to batch (no row when it is not theirs). */
export function renamePasskey(db: Db, userId: number, id: number, name: string) {
  return db
    .update(passkeys)
    .set({ name })
    .where(and(eq(passkeys.id, id), eq(passkeys.userId, userId)))
    .returning()
}

/**
 * Removes the user's passkey unless it is their last way to sign in (src/db/ways-in.ts): a
 * statement to batch, no row when nothing was removed.
 */
export function removePasskey(db: Db, userId: number, id: number) {
  return db
    .delete(passkeys)
    .where(and(eq(passkeys.id, id), eq(passkeys.userId, userId), keepsAnotherWayIn(db, userId, { passkeyId: id })))
    .returning({ id: passkeys.id, name: passkeys.name })
}

/** The passkeys added while the account's address was unverified: a statement to batch. */
export function passkeysAddedWhileUnverified(db: Db, userId: number) {
  return db
    .select({ name: passkeys.name })
    .from(passkeys)
    .where(and(eq(passkeys.userId, userId), eq(passkeys.addedWhileUnverified, true)))
}

/** Removes the passkeys added while the address was unverified (a password reset by its owner). */
export function removePasskeysAddedWhileUnverified(db: Db, userId: number | SQL): BatchItem<'sqlite'> {
  return db.delete(passkeys).where(and(eq(passkeys.userId, userId), eq(passkeys.addedWhileUnverified, true)))
}

/** Counts every passkey of the user as added while unverified (after a change to a new address). */
export function markPasskeysUnproven(db: Db, userId: number): BatchItem<'sqlite'> {
  return db.update(passkeys).set({ addedWhileUnverified: true }).where(eq(passkeys.userId, userId))
}

export function prunePasskeyChallenges(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(passkeyChallenges).where(lt(passkeyChallenges.expiresAt, cutoff))
}
