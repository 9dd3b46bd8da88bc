import { sql } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { drizzle } from 'drizzle-orm/d1'
import type { DrizzleD1Database } from 'drizzle-orm/d1'
import * as schema from './schema'

/** The drizzle client every data module takes as its first argument. */
export type Db = DrizzleD1Database<typeof schema>

/** A non-empty list of statements for db.batch(), which D1 runs atomically. */
export type BatchStatements = [BatchItem<'sqlite'>, ...BatchItem<'sqlite'>[]]

/**
 * A drizzle client over `DB`: the raw binding (cron, tests) or a request's timed D1 session,
 * which has the only two methods drizzle calls, prepare() and batch().
 */
export function createDb(bindings: { DB: D1Database }): Db {
  return drizzle(bindings.DB, { schema, casing: 'snake_case' })
}

/** The cheapest round trip to D1: proves it answers without depending on any data (/health). */
export async function pingD1(db: Db): Promise<void> {
  await db.get(sql`select 1 as ok`)
}
