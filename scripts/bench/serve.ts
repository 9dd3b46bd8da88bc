// What the scripts that serve the built Worker with the Miniflare API (bench, bench:geo, capacity)
// share: the bundle, the migrations, the keys of wrangler.toml they need (read without a TOML
// library), and their log lines.
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { root } from '../project-root'
import { runWrangler } from '../wrangler'

const startedAt = Date.now()

/** A log line stamped with the seconds since the script started. */
export function log(message: string): void {
  console.log(`[${((Date.now() - startedAt) / 1000).toFixed(1).padStart(6)}s] ${message}`)
}

/** Bundles `entry` (default: wrangler.toml's main) as `wrangler deploy` would; returns the module's path. */
export function buildBundle(outdir: string, entry?: string): string {
  runWrangler(['deploy', ...(entry === undefined ? [] : [entry]), '--dry-run', '--minify', '--outdir', outdir])
  const modules = readdirSync(outdir).filter((name) => /\.m?js$/.test(name))
  if (modules.length !== 1 || modules[0] === undefined) {
    throw new Error(`expected one JS module in ${outdir}, found: ${readdirSync(outdir).join(', ')}`)
  }
  return join(outdir, modules[0])
}

export interface Migration {
  file: string
  statements: string[]
}

/** migrations/*.sql in order, split into statements as wrangler applies them. */
export function readMigrations(): Migration[] {
  const dir = join(root, 'migrations')
  return readdirSync(dir)
    .filter((name) => name.endsWith('.sql'))
    .sort()
    .map((file) => ({
      file,
      // drizzle-kit separates statements with this marker; triggers contain `;`, so never split on it.
      statements: readFileSync(join(dir, file), 'utf8')
        .split('--> statement-breakpoint')
        .map((statement) => statement.trim())
        .filter((statement) => statement.replace(/--[^\n]*/g, '').trim() !== ''),
    }))
}

/** The JSON body of a response that must have `status`; otherwise an error quoting the body. */
export async function expectJson<T>(response: Response, what: string, status = 200): Promise<T> {
  const text = await response.text()
  if (response.status !== status)
    throw new Error(`${what}: expected ${status}, got ${response.status}: ${text.slice(0, 500)}`)
  return JSON.parse(text) as T
}

export interface WorkerConfig {
  compatibilityDate: string
  compatibilityFlags: string[]
  vars: Record<string, string>
  rateLimits: string[]
  /** The first D1 database's id (a placeholder locally). */
  databaseId: string
}

export function readWranglerToml(): WorkerConfig {
  const text = readFileSync(join(root, 'wrangler.toml'), 'utf8')
  const config: WorkerConfig = {
    compatibilityDate: '',
    compatibilityFlags: [],
    vars: {},
    rateLimits: [],
    databaseId: '',
  }
  let section = ''
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim()
    if (line === '' || line.startsWith('#')) continue
    const header = /^\[\[?([^\]]+)\]\]?$/.exec(line)
    if (header) {
      section = header[1] ?? ''
      continue
    }
    const pair = /^([A-Za-z0-9_]+)\s*=\s*(.+)$/.exec(line)
    if (!pair) continue
    const [, key = '', value = ''] = pair
    const string = /^"((?:[^"\\]|\\.)*)"/.exec(value)?.[1]
    if (section === '' && key === 'compatibility_date' && string !== undefined) config.compatibilityDate = string
    if (section === '' && key === 'compatibility_flags')
      config.compatibilityFlags = [...value.matchAll(/"([^"]*)"/g)].map((m) => m[1] ?? '')
    if (section === 'vars' && string !== undefined) config.vars[key] = JSON.parse(`"${string}"`) as string
    if (section === 'ratelimits' && key === 'name' && string !== undefined) config.rateLimits.push(string)
    if (section === 'd1_databases' && key === 'database_id' && string !== undefined && config.databaseId === '')
      config.databaseId = string
  }
  if (config.compatibilityDate === '' || config.databaseId === '')
    throw new Error('wrangler.toml has no compatibility_date or D1 database_id')
  return config
}
