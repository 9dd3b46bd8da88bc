// The one set-up of the benchmarks (bench, bench:geo, capacity): bundle the Worker as `wrangler
// deploy` would and serve the bundle with the Miniflare API on 127.0.0.1 (no `wrangler dev` proxy
// and no request-log round trip to Node, which cost several times the Worker's own work), with the
// bindings, vars, rate limits and compatibility date and flags wrangler reads from wrangler.toml,
// then D1 migrated as wrangler migrates it. What a benchmark must not measure is overridden here.
import { randomBytes } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Readable } from 'node:stream'
import { Miniflare } from 'miniflare'
import type { MiniflareOptions } from 'miniflare'
import { applyMigrations } from '../d1-migrations'
import { readWranglerConfig, runWrangler, wranglerApi, wranglerConfigPath } from '../wrangler'

/** The limit every rate-limit binding gets (per 60 s): the limiter never refuses, so it is not what is measured. */
export const BENCH_RATE_LIMIT = 1_000_000_000

const startedAt = Date.now()

/** A log line stamped with the seconds since the script started. */
export function log(message: string): void {
  console.log(`[${((Date.now() - startedAt) / 1000).toFixed(1).padStart(6)}s] ${message}`)
}

/** The JSON body of a response that must have `status`; otherwise an error quoting the body. */
export async function expectJson<T>(response: Response, what: string, status = 200): Promise<T> {
  const text = await response.text()
  if (response.status !== status)
    throw new Error(`${what}: expected ${status}, got ${response.status}: ${text.slice(0, 500)}`)
  return JSON.parse(text) as T
}

/** Bundles `entry` (default: wrangler.toml's main) as `wrangler deploy` would; returns the module's path. */
function buildBundle(outdir: string, entry: string | undefined, minify: boolean): string {
  runWrangler([
    'deploy',
    ...(entry === undefined ? [] : [entry]),
    '--dry-run',
    ...(minify ? ['--minify'] : []),
    '--outdir',
    outdir,
  ])
  const modules = readdirSync(outdir).filter((name) => /\.m?js$/.test(name))
  if (modules.length !== 1 || modules[0] === undefined) {
    throw new Error(`expected one JS module in ${outdir}, found: ${readdirSync(outdir).join(', ')}`)
  }
  return join(outdir, modules[0])
}

export interface ServeOptions {
  /** A folder for the bundle; the caller removes it. */
  workDir: string
  /** The entry to bundle instead of wrangler.toml's main (bench:geo's geo-worker.ts). */
  entry?: string
  /** Vars added to wrangler.toml's [vars] and the overrides below, or replacing them. */
  vars?: Record<string, string>
  /** Keep D1 in this folder, in wrangler's `--persist-to` layout; default: in memory, fresh every run. */
  persistTo?: string
  /** Minify as a deployment does (default); the profiler turns it off so that names stay readable. */
  minify?: boolean
  /** Open V8's inspector on this port (the profiler). */
  inspectorPort?: number
}

export interface ServedWorker {
  /** http://127.0.0.1:<port>, without a trailing slash. */
  base: string
  db: D1Database
  scriptPath: string
  /** The rate-limit bindings of wrangler.toml, each bound at BENCH_RATE_LIMIT. */
  rateLimits: string[]
  dispose: () => Promise<void>
}

/** The Miniflare options of the bundle: wrangler's, with what a benchmark overrides. */
function miniflareOptions(scriptPath: string, options: ServeOptions): { mf: MiniflareOptions; rateLimits: string[] } {
  // Static assets are left out: no benchmark requests them, and the asset router in front of the
  // Worker would be measured too.
  const { assets: _assets, ...worker } =
    wranglerApi().unstable_getMiniflareWorkerOptions(wranglerConfigPath).workerOptions
  const rateLimits = Object.keys(worker.ratelimits ?? {})
  const secret = (): string => randomBytes(48).toString('base64url')
  // wrangler.toml's [vars] only: wrangler would add the developer's .dev.vars too, and those must
  // not change what is measured.
  const { vars: tomlVars } = readWranglerConfig()
  const vars = Object.entries(worker.bindings ?? {}).filter(([name]) => Object.hasOwn(tomlVars, name))
  const mf: MiniflareOptions = {
    ...worker,
    scriptPath,
    modules: true,
    // Module names are relative to modulesRoot; the default (cwd) would make them `../../tmp/…`.
    modulesRoot: dirname(scriptPath),
    host: '127.0.0.1',
    port: 0,
    ratelimits: Object.fromEntries(
      rateLimits.map((name) => [name, { simple: { limit: BENCH_RATE_LIMIT, period: 60 as const } }]),
    ),
    bindings: {
      ...Object.fromEntries(vars),
      JWT_SECRET: secret(),
      MFA_ENCRYPTION_KEY: secret(),
      LOG_REQUESTS: 'false',
      // Registration emails go to the worker's stdout, which is dropped below.
      MAIL_TRANSPORT: 'console',
      ...options.vars,
    },
    // No persist options: D1, KV and the cache live in memory (unless persistTo keeps D1).
    ...(options.persistTo === undefined ? {} : { d1Persist: join(options.persistTo, 'v3', 'd1') }),
    logRequests: false,
    ...(options.inspectorPort === undefined ? {} : { inspectorPort: options.inspectorPort }),
    // The worker's stdout (console.log, e.g. the console mail transport) is dropped; its stderr is kept.
    handleRuntimeStdio: (stdout: Readable, stderr: Readable) => {
      stdout.resume()
      stderr.pipe(process.stderr)
    },
  }
  return { mf, rateLimits }
}

/** Builds the bundle, serves it, and migrates its D1. The caller disposes of it. */
export async function serveWorker(options: ServeOptions): Promise<ServedWorker> {
  const entry = options.entry ?? 'wrangler.toml main'
  log(
    `building ${entry} (wrangler deploy --dry-run${options.minify === false ? '' : ' --minify'}) into ${options.workDir}`,
  )
  const scriptPath = buildBundle(join(options.workDir, 'dist'), options.entry, options.minify ?? true)
  const { mf: mfOptions, rateLimits } = miniflareOptions(scriptPath, options)
  const mf = new Miniflare(mfOptions)
  try {
    const base = (await mf.ready).toString().replace(/\/$/, '')
    const db = await mf.getD1Database('DB')
    const applied = await applyMigrations(db)
    log(`serving ${scriptPath} with Miniflare at ${base}; applied ${applied.length} migrations`)
    log(`rate limits ${rateLimits.join(', ')} bound at ${BENCH_RATE_LIMIT} per 60 s, so the limiter is not measured`)
    return { base, db, scriptPath, rateLimits, dispose: () => mf.dispose() }
  } catch (error) {
    await mf.dispose()
    throw error
  }
}
