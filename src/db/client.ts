import { sql } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { DrizzleD1Database, SQLiteD1Session } from 'drizzle-orm/d1'
import { createTableRelationsHelpers, extractTablesRelationalConfig } from 'drizzle-orm/relations'
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core'
import * as schema from './schema'

/** The drizzle client every data module takes as its first argument, and the D1 it runs on. */
export type Db = DrizzleD1Database<typeof schema> & { $client: D1Database }

/** A non-empty list of statements for db.batch(), which D1 runs atomically. */
export type BatchStatements = [BatchItem<'sqlite'>, ...BatchItem<'sqlite'>[]]

/**
 * A drizzle client over `DB`: the raw binding (cron, tests) or a request's timed D1 session,
 * which has the only two methods drizzle calls, prepare() and batch().
 */
export function createDb(bindings: { DB: D1Database }): Db {
  // drizzle(DB, { schema, casing }) does this, but builds the dialect and the relational config
  // anew each time, and each new dialect starts with an empty cache of snake_case column names: a
  // fifth of a signed-in read's CPU when done per request. Both are the same for every request.
  const { dialect, relations } = isolateShared()
  const session = new SQLiteD1Session<typeof schema, Relations['schema']>(bindings.DB, dialect, relations, {})
  return Object.assign(new DrizzleD1Database<typeof schema>('async', dialect, session, relations), {
    $client: bindings.DB,
  })
}

type Relations = NonNullable<ConstructorParameters<typeof DrizzleD1Database<typeof schema>>[3]>
interface IsolateShared {
  dialect: SQLiteAsyncDialect
  relations: Relations
}

let shared: IsolateShared | undefined

/** The dialect (with its column-name cache) and the schema's relational config, built once per isolate. */
function isolateShared(): IsolateShared {
  if (shared === undefined) {
    const tables = extractTablesRelationalConfig(schema, createTableRelationsHelpers)
    shared = {
      dialect: new SQLiteAsyncDialect({ casing: 'snake_case' }),
      relations: {
        fullSchema: schema,
        schema: tables.tables as Relations['schema'],
        tableNamesMap: tables.tableNamesMap,
      },
    }
  }
  return shared
}

/** The cheapest round trip to D1: proves it answers without depending on any data (/health). */
export async function pingD1(db: Db): Promise<void> {
  await db.get(sql`select 1 as ok`)
}
