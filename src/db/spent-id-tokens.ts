import { lt } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { spentIdTokens } from './schema'

// Provider ID tokens that signed in or linked once: a second use of the same token is refused.

/**
 * The statement that records an ID token (by its SHA-256) as spent until it expires; it returns a
 * row only the first time, so of two concurrent uses exactly one gets one. Batch it with the
 * lookup that the token is for.
 */
export function spendIdToken(db: Db, tokenHash: string, expiresAt: Date) {
  return db
    .insert(spentIdTokens)
    .values({ tokenHash, expiresAt })
    .onConflictDoNothing()
    .returning({ tokenHash: spentIdTokens.tokenHash })
}

/** Deletes records of tokens that expired before `cutoff` (the cron): those are refused anyway. */
export function pruneSpentIdTokens(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(spentIdTokens).where(lt(spentIdTokens.expiresAt, cutoff))
}
