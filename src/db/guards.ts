import { sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { batchGuards } from './schema'

// A D1 batch is one transaction: when any statement fails, none lands. A guard is a statement
// that fails exactly when a condition does not hold at its place in the batch, so the batch's
// other writes happen only if, say, the statement before it spent a recovery code. It inserts
// NULL into batch_guards' NOT NULL column, which SQLite refuses; when the condition holds it
// inserts nothing.

/** The statement that fails its batch unless `condition` holds when it runs. */
export function guardThat(db: Db, condition: SQL): BatchItem<'sqlite'> {
  return db.insert(batchGuards).select(sql`select null where not (${condition})`)
}

/** True for the failure of a batch whose guard did not hold. */
export function isGuardFailure(err: unknown): boolean {
  for (let cause: unknown = err, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth++) {
    if (/NOT NULL constraint failed: batch_guards\.guard/.test(cause.message)) return true
  }
  return false
}
