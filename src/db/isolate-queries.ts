import { getTableColumns, getTableName } from 'drizzle-orm'
import type { InferSelectModel, Table } from 'drizzle-orm'
import { toSnakeCase } from 'drizzle-orm/casing'
import type { Db } from './client'
import { createDb } from './client'

// The hottest reads (a signed-in GET /users/me) run SQL that drizzle builds once per isolate, not
// once per request: building a select walks the whole query tree (drizzle's `is()` checks on
// every chunk), which was a fifth of such a request's CPU (docs/benchmarks.md § CPU per request).
// The SQL and the row mapping still come from the schema in src/db/schema.ts; only the building
// is memoised.

/** Where drizzle builds SQL without running it: the builder needs a dialect, not a database. */
let builder: Db | undefined
const buildingDb = (): Db => {
  builder ??= createDb({ DB: {} as D1Database })
  return builder
}

/**
 * SQL text built by drizzle on first use and kept for the isolate. `build` must use
 * sql.placeholder() for every value (they become `?`, bound in the order they appear).
 */
export function isolateSql(build: (db: Db) => { toSQL(): { sql: string } }): () => string {
  let text: string | undefined
  return () => {
    text ??= build(buildingDb()).toSQL().sql
    return text
  }
}

/**
 * Maps a row as D1 returns it (snake_case column names, driver values) to the table's row, the way
 * drizzle's own select maps it (the schema's `casing: 'snake_case'`, each column's mapFromDriverValue).
 */
export function rowMapperOf<T extends Table>(table: T): (raw: Record<string, unknown>) => InferSelectModel<T> {
  const columns = Object.entries(getTableColumns(table)).map(([key, column]) => ({
    key,
    name: column.keyAsName ? toSnakeCase(column.name) : column.name,
    column,
  }))
  return (raw) => {
    const row: Record<string, unknown> = {}
    for (const { key, name, column } of columns) {
      if (!(name in raw)) throw new Error(`rowMapperOf(${getTableName(table)}): the row has no column ${name}`)
      const value = raw[name]
      row[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value)
    }
    return row as InferSelectModel<T>
  }
}
