import { eq, lt } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { spentIdTokens } from './schema'

// Provider ID tokens that signed in or linked once: a second use of the same token is refused.

/**
 * The statement that records an ID token (by its SHA-256) as spent until it expires, for the
 * batch of what the token allows (a session, a link, a fresh sign-in time). A token spent before
 * fails the whole batch on the primary key (isIdTokenReplay), so of two concurrent uses exactly
 * one lands, and a batch that fails for any reason leaves the token unspent for the retry.
 */
export function spendIdToken(db: Db, tokenHash: string, expiresAt: Date): BatchItem<'sqlite'> {
  return db.insert(spentIdTokens).values({ tokenHash, expiresAt })
}

/** The lookup that tells a token spent before, to refuse a replay before doing anything else. */
export function spentIdToken(db: Db, tokenHash: string) {
  return db
    .select({ tokenHash: spentIdTokens.tokenHash })
    .from(spentIdTokens)
    .where(eq(spentIdTokens.tokenHash, tokenHash))
}

/** True for the failure of a batch whose ID token was spent meanwhile. */
export function isIdTokenReplay(err: unknown): boolean {
  for (let cause: unknown = err, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth++) {
    if (/UNIQUE constraint failed: spent_id_tokens\.token_hash/.test(cause.message)) return true
  }
  return false
}

/** Deletes records of tokens that expired before `cutoff` (the cron): those are refused anyway. */
export function pruneSpentIdTokens(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(spentIdTokens).where(lt(spentIdTokens.expiresAt, cutoff))
}
