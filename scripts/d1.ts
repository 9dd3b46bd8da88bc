// The D1 database the operator tools (create-admin, seed) work on: the local one by default, the
// deployed one with --remote.
//
// Local: one Miniflare in this process, through wrangler's getPlatformProxy(), with wrangler.toml's
// DB binding over wrangler's own local state (.wrangler/state, which `wrangler dev` and `wrangler
// d1 execute --local` use too, so `npm run dev` sees the same data), migrated first
// (scripts/d1-migrations.ts). EDGEPRESS_D1_PERSIST=<dir> points it at another store, the one
// `wrangler d1 … --local --persist-to <dir>` would use, so tests can run a script against a
// throwaway D1. One process for the whole script: a `wrangler d1 execute` per statement costs ~2 s.
// Remote: `wrangler d1 execute --remote`, one process per call; migrations are `npm run deploy`'s.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { applyMigrations } from './d1-migrations'
import { root } from './project-root'
import { readWranglerConfig, runWrangler, wranglerApi } from './wrangler'

export type Target = '--local' | '--remote'

export type Row = Record<string, unknown>

export interface D1Connection {
  /** 'local D1' or 'remote D1', for messages. */
  where: string
  /** Runs SQL (several statements allowed, split as wrangler splits them); returns the rows of the last one. */
  execute: (sql: string) => Promise<Row[]>
  close: () => Promise<void>
}

export interface OpenD1Options {
  /** The local store (`--persist-to` layout); default EDGEPRESS_D1_PERSIST, else wrangler's .wrangler/state. */
  persistTo?: string
}

/** A SQL string literal: single quotes doubled, so any text is safe inside '…'. */
export function literal(value: string | number | boolean | null): string {
  if (value === null) return 'NULL'
  if (typeof value === 'number') return String(value)
  if (typeof value === 'boolean') return value ? '1' : '0'
  return `'${value.replace(/'/g, "''")}'`
}

async function openLocal(options: OpenD1Options): Promise<D1Connection> {
  const { getPlatformProxy, unstable_splitSqlQuery: splitSqlQuery } = wranglerApi()
  const persistTo = options.persistTo ?? process.env.EDGEPRESS_D1_PERSIST
  // A config with the D1 binding only: wrangler.toml's Durable Object and queues belong to the
  // Worker, which these tools do not run (workerd would warn about an unexported class).
  const configDir = mkdtempSync(join(tmpdir(), 'edgepress-d1-'))
  const configPath = join(configDir, 'wrangler.json')
  const { name, compatibility_date, d1_databases } = readWranglerConfig()
  writeFileSync(configPath, JSON.stringify({ name, compatibility_date, d1_databases }))
  const proxy = await getPlatformProxy<{ DB: D1Database }>({
    configPath,
    // getPlatformProxy wants the v3 folder inside what --persist-to names; `true` is wrangler's default.
    // Wrangler's default state folder is relative to the config, so it is named here.
    persist: { path: join(persistTo ? resolve(root, persistTo) : join(root, '.wrangler', 'state'), 'v3') },
    remoteBindings: false,
  })
  rmSync(configDir, { recursive: true, force: true })
  const db = proxy.env.DB
  try {
    for (const name of await applyMigrations(db)) console.log(`Applied migration ${name} to the local D1.`)
  } catch (error) {
    await proxy.dispose()
    throw error
  }
  return {
    where: 'local D1',
    execute: async (sql) => {
      const results = await db.batch<Row>(splitSqlQuery(sql).map((statement) => db.prepare(statement)))
      return results[results.length - 1]?.results ?? []
    },
    close: () => proxy.dispose(),
  }
}

function executeRemotely(sql: string): Row[] {
  const dir = mkdtempSync(join(tmpdir(), 'edgepress-'))
  const file = join(dir, 'statements.sql')
  try {
    writeFileSync(file, sql)
    const output = runWrangler(['d1', 'execute', 'DB', '--remote', '--json', '--file', file], { stderr: 'inherit' })
    const results = JSON.parse(output) as { results?: Row[] }[]
    return results[results.length - 1]?.results ?? []
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The database of `target`; close it when done. */
export async function openD1(target: Target, options: OpenD1Options = {}): Promise<D1Connection> {
  if (target === '--local') return openLocal(options)
  return { where: 'remote D1', execute: async (sql) => executeRemotely(sql), close: async () => {} }
}

/** PASSWORD_PEPPER from the environment, or for local work from .dev.vars. */
export function passwordPepper(target: Target): string | undefined {
  if (process.env.PASSWORD_PEPPER) return process.env.PASSWORD_PEPPER
  if (target === '--remote') return undefined
  try {
    const match = /^PASSWORD_PEPPER\s*=\s*"?([^"\n]+)"?\s*$/m.exec(readFileSync(join(root, '.dev.vars'), 'utf8'))
    return match?.[1]
  } catch {
    return undefined
  }
}
