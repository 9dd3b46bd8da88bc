import type { BatchItem } from 'drizzle-orm/batch'
import { and, eq, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { Db } from './client'
import { externalIdentities, users } from './schema'
import { keepsAnotherWayIn } from './ways-in'
import type { UserRow } from './schema'

/** The user an identity signs in to, if it is linked: a statement to batch (rows of `{ user }`). */
export function userOfIdentity(db: Db, provider: string, sub: string) {
  return db
    .select({ user: users })
    .from(externalIdentities)
    .innerJoin(users, eq(users.id, externalIdentities.userId))
    .where(and(eq(externalIdentities.provider, provider), eq(externalIdentities.sub, sub)))
}

/** The user an identity signs in to, if it is linked. */
export async function findUserByIdentity(db: Db, provider: string, sub: string): Promise<UserRow | undefined> {
  const [row] = await userOfIdentity(db, provider, sub)
  return row?.user
}

/** The providers linked to a user, by name: a statement to batch with the user's row. */
export function providersOf(db: Db, userId: number) {
  return db
    .select({ provider: externalIdentities.provider, sub: externalIdentities.sub })
    .from(externalIdentities)
    .where(eq(externalIdentities.userId, userId))
    .orderBy(externalIdentities.provider)
}

/**
 * Links an identity to a user (`userId` may be a subquery for a user inserted in the same batch),
 * unless the user already has an identity at that provider: checked in the same statement, so two
 * concurrent links of one provider to one user cannot both land. Returns the row it inserted.
 * `addedWhileUnverified`: the account's address was not verified (a password reset removes it).
 */
export function linkIdentity(
  db: Db,
  identity: { provider: string; sub: string; email: string | undefined },
  link: { userId: number | SQL; addedWhileUnverified: boolean },
  now: Date,
) {
  const taken = db
    .select({ one: sql`1` })
    .from(externalIdentities)
    .where(and(eq(externalIdentities.userId, link.userId), eq(externalIdentities.provider, identity.provider)))
  // Every column, in the table's order (drizzle's insert … select).
  return db
    .insert(externalIdentities)
    .select(
      sql`select ${identity.provider}, ${identity.sub}, ${link.userId}, ${identity.email ?? null}, ${now.getTime()}, ${link.addedWhileUnverified ? 1 : 0} where not exists ${taken}`,
    )
    .returning({ sub: externalIdentities.sub })
}

/**
 * Unlinks the user's identity at this provider unless it is the account's last way to sign in
 * (src/db/ways-in.ts): checked in the same statement. Returns the rows removed.
 */
export function unlinkIdentity(db: Db, userId: number, provider: string) {
  return db
    .delete(externalIdentities)
    .where(
      and(
        eq(externalIdentities.userId, userId),
        eq(externalIdentities.provider, provider),
        keepsAnotherWayIn(db, userId, { provider }),
      ),
    )
    .returning({ sub: externalIdentities.sub })
}

/** The owner of an identity, if linked: a statement to batch. */
export function identityOwner(db: Db, provider: string, sub: string) {
  return db
    .select({ userId: externalIdentities.userId })
    .from(externalIdentities)
    .where(and(eq(externalIdentities.provider, provider), eq(externalIdentities.sub, sub)))
}

/** The providers linked to a user while the account's address was unverified: a statement to batch. */
export function identitiesAddedWhileUnverified(db: Db, userId: number) {
  return db
    .select({ provider: externalIdentities.provider })
    .from(externalIdentities)
    .where(and(eq(externalIdentities.userId, userId), eq(externalIdentities.addedWhileUnverified, true)))
}

/**
 * The statement that counts every identity of the user as added while unverified: after a change
 * to a new, unverified address, none of them was added by whoever holds that mailbox, so its
 * owner's password reset removes them (docs/design.md § Account squatting).
 */
export function markIdentitiesUnproven(db: Db, userId: number): BatchItem<'sqlite'> {
  return db.update(externalIdentities).set({ addedWhileUnverified: true }).where(eq(externalIdentities.userId, userId))
}

/** The DELETE of the identities linked while the address was unverified (`userId` may be a subquery). */
export function removeIdentitiesAddedWhileUnverified(db: Db, userId: number | SQL) {
  return db
    .delete(externalIdentities)
    .where(and(eq(externalIdentities.userId, userId), eq(externalIdentities.addedWhileUnverified, true)))
}
