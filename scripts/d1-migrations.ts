// Applies migrations/ to a D1 binding from this process, exactly as `wrangler d1 migrations apply
// --local` does in wrangler 4.86 (src/d1/migrations/apply.ts): the same ledger table (with the
// same schema), the same order, and each file plus its ledger row in one batch split by wrangler's
// own splitSqlQuery. So wrangler, `npm run db:migrate` and `npm run dev` see the result as
// migrated (scripts/create-admin.test.ts checks it with `wrangler d1 migrations list`), and a
// script spares the ~2.5 s a `wrangler d1 migrations apply` process costs even with nothing to do.
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { readWranglerConfig, wranglerApi, wranglerConfigPath } from './wrangler'

interface MigrationsSource {
  dir: string
  table: string
}

/** Where wrangler takes the migrations of the DB binding from, and where it records them. */
function migrationsSource(): MigrationsSource {
  const config = readWranglerConfig()
  const database = config.d1_databases.find((entry) => entry.binding === 'DB')
  if (database === undefined) throw new Error('wrangler.toml has no D1 database bound as DB')
  return {
    dir: join(dirname(wranglerConfigPath), database.migrations_dir ?? 'migrations'),
    table: database.migrations_table ?? 'd1_migrations',
  }
}

/** The .sql files not in the ledger yet, in wrangler's order (by their number prefix). */
async function pendingMigrations(db: D1Database, source: MigrationsSource): Promise<string[]> {
  await db
    .prepare(
      `CREATE TABLE IF NOT EXISTS ${source.table}(
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		name       TEXT UNIQUE,
		applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL
);`,
    )
    .run()
  const applied = await db.prepare(`SELECT name FROM ${source.table} ORDER BY id`).all<{ name: string }>()
  const done = new Set(applied.results.map((row) => row.name))
  return readdirSync(source.dir)
    .filter((name) => name.endsWith('.sql') && !done.has(name))
    .sort()
    .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10))
}

/** Applies the pending migrations and returns their file names (none when the database is up to date). */
export async function applyMigrations(db: D1Database): Promise<string[]> {
  const source = migrationsSource()
  const pending = await pendingMigrations(db, source)
  const { unstable_splitSqlQuery: splitSqlQuery } = wranglerApi()
  for (const name of pending) {
    const sql = `${readFileSync(join(source.dir, name), 'utf8')}\nINSERT INTO ${source.table} (name) values ('${name}');`
    await db.batch(splitSqlQuery(sql).map((statement) => db.prepare(statement)))
  }
  return pending
}
