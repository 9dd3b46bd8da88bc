// `npm run bench`: HTTP throughput and latency of the built Worker, on the machine it runs on.
//
// 1. Bundles the Worker as it would be deployed (`wrangler deploy --dry-run --minify --outdir`).
// 2. Serves that bundle with the Miniflare API (no `wrangler dev` proxy and no request-log round
//    trip to Node, which cost several times the Worker's own work) on 127.0.0.1, with fresh
//    in-memory D1, KV and cache.
// 3. Applies migrations/, registers one user through the API, inserts N posts straight into D1,
//    logs in.
// 4. Measures each scenario with autocannon at a fixed concurrency and prints a table, ratios
//    that cancel out machine speed (users/me ÷ health, deep page ÷ first page) and writes JSON to
//    bench-results/<timestamp>.json.
//
// Options (flags win over environment variables):
//   --posts N        posts to seed (BENCH_POSTS, default 10 000)
//   --duration S     seconds per scenario (BENCH_DURATION, default 10)
//   --connections C  concurrent connections (BENCH_CONNECTIONS, default 10)
//   --only a,b       run only the named scenarios (see SCENARIOS below)
//   --strict         exit 1 when a target is missed (default: report only)
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { cpus, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import type { Readable } from 'node:stream'
import { Miniflare } from 'miniflare'
import { root } from '../project-root'
import { buildBundle, expectJson, log, readMigrations, readWranglerToml } from './serve'

// ---- options --------------------------------------------------------------------------------

const { values: flags } = parseArgs({
  options: {
    posts: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    only: { type: 'string' },
    strict: { type: 'boolean', default: false },
  },
})

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) {
    console.error(`bench: ${name} must be a positive integer, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return value
}

const POSTS = positiveInt('--posts', flags.posts ?? process.env.BENCH_POSTS, 10_000)
const DURATION = positiveInt('--duration', flags.duration ?? process.env.BENCH_DURATION, 10)
const CONNECTIONS = positiveInt('--connections', flags.connections ?? process.env.BENCH_CONNECTIONS, 10)
const ONLY = flags.only
  ?.split(',')
  .map((name) => name.trim())
  .filter(Boolean)
const STRICT = flags.strict === true
/** Pages followed through `next` before the deep-page scenario hammers that cursor. */
const DEEP_PAGES = 100
/** Limit for the rate-limit bindings: high enough that the limiter never refuses during the bench. */
const BENCH_RATE_LIMIT = 1_000_000_000

// ---- autocannon (CommonJS, no bundled types: only the part used here is typed) ---------------

interface AutocannonRequest {
  method?: string
  path?: string
  headers?: Record<string, string>
  body?: string
  setupRequest?: (request: AutocannonRequest, context: Record<string, unknown>) => AutocannonRequest
  onResponse?: (status: number, body: string, context: Record<string, unknown>) => void
}

interface AutocannonOptions {
  url: string
  connections: number
  duration: number
  pipelining?: number
  timeout?: number
  method?: string
  headers?: Record<string, string>
  body?: string
  requests?: AutocannonRequest[]
}

interface Histogram {
  average: number
  mean: number
  p50: number
  p99: number
  max: number
}

interface AutocannonResult {
  requests: Histogram & { total: number; sent: number }
  latency: Histogram
  errors: number
  timeouts: number
  non2xx: number
  mismatches: number
  duration: number
  statusCodeStats: Record<string, { count: number }>
}

type Autocannon = (
  options: AutocannonOptions,
  callback: (err: Error | null, result: AutocannonResult) => void,
) => unknown
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

function cannon(options: AutocannonOptions): Promise<AutocannonResult> {
  return new Promise((resolve, reject) => {
    autocannon(options, (err, result) => (err ? reject(err) : resolve(result)))
  })
}

// ---- helpers --------------------------------------------------------------------------------

interface TokenPair {
  access_token: string
  refresh_token: string
}

interface Page {
  results: Array<{ id: number }>
  next: string | null
}

// ---- scenarios ------------------------------------------------------------------------------

interface Scenario {
  name: string
  description: string
  /** Status codes that count as success; anything else is an error. */
  ok: number[]
  /** Runs setup (e.g. a fresh access token) and returns the autocannon options. */
  prepare: () => Promise<Omit<AutocannonOptions, 'connections' | 'duration'>>
}

interface ScenarioResult {
  name: string
  description: string
  requestsPerSecond: number
  p50Ms: number
  p99Ms: number
  meanMs: number
  total: number
  errors: number
  statusCodes: Record<string, number>
  transportErrors: number
  timeouts: number
}

async function main(): Promise<void> {
  const config = readWranglerToml()
  const loadBefore = loadavg()[0] ?? 0
  if (loadBefore > 0.5) {
    log(
      `warning: load average is ${loadBefore.toFixed(2)} before the bench: other work shares these ${cpus().length} CPUs, so absolute numbers will be low and noisy`,
    )
  }
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-bench-'))
  let mf: Miniflare | undefined
  let failed = false
  try {
    log(`building the bundle (wrangler deploy --dry-run --minify) into ${workDir}`)
    const scriptPath = buildBundle(join(workDir, 'dist'))

    const jwtSecret = randomBytes(48).toString('base64url')
    mf = new Miniflare({
      scriptPath,
      modules: true,
      // Module names are relative to modulesRoot; the default (cwd) would make them `../../tmp/…`.
      modulesRoot: dirname(scriptPath),
      compatibilityDate: config.compatibilityDate,
      compatibilityFlags: config.compatibilityFlags,
      host: '127.0.0.1',
      port: 0,
      // Fresh state every run: no persist options → D1, KV and the cache live in memory.
      d1Databases: { DB: 'bench-db' },
      kvNamespaces: ['REVOKED_TOKENS'],
      ratelimits: Object.fromEntries(
        config.rateLimits.map((name) => [name, { simple: { limit: BENCH_RATE_LIMIT, period: 60 as const } }]),
      ),
      bindings: { ...config.vars, JWT_SECRET: jwtSecret, LOG_REQUESTS: 'false', MFA_ENCRYPTION_KEY: jwtSecret },
      logRequests: false,
      // The worker's stdout is console.log (e.g. MAIL_TRANSPORT=console printing the registration
      // email): dropped. Its stderr (errors) is kept.
      handleRuntimeStdio: (stdout: Readable, stderr: Readable) => {
        stdout.resume()
        stderr.pipe(process.stderr)
      },
    })
    const base = (await mf.ready).toString().replace(/\/$/, '')
    log(`serving ${scriptPath} with Miniflare at ${base}`)
    log(
      `rate limits ${config.rateLimits.join(', ')} bound at ${BENCH_RATE_LIMIT} per 60 s, so the bench measures the API, not the limiter`,
    )

    // Migrations, statement by statement (exec() would split triggers at their inner `;`).
    const db = await mf.getD1Database('DB')
    for (const migration of readMigrations()) {
      for (const statement of migration.statements) await db.prepare(statement).run()
      log(`applied ${migration.file} (${migration.statements.length} statements)`)
    }

    const api = (path: string, init: RequestInit = {}): Promise<Response> => fetch(`${base}${path}`, init)
    const jsonPost = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
      api(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      })

    // One user, registered through the API; logins below are real logins.
    const credentials = { username: 'bench', password: `bench-${randomBytes(9).toString('base64url')}` }
    await expectJson(
      await jsonPost('/api/v1/auth/register', { ...credentials, email: 'bench@example.com' }),
      'register',
      201,
    )
    const user = await db
      .prepare('SELECT id FROM users WHERE username = ?')
      .bind(credentials.username)
      .first<{ id: number }>()
    if (user === null) throw new Error('the registered user is not in D1')
    const login = async (): Promise<TokenPair> =>
      expectJson<TokenPair>(await jsonPost('/api/v1/auth/token', credentials), 'login')

    // Posts straight into D1: multi-row INSERTs of 20 rows × 5 parameters (D1 allows 100), in batches.
    const seedStart = Date.now()
    const rowsPerStatement = 20
    const statementsPerBatch = 50
    const now = Date.now()
    let inserted = 0
    while (inserted < POSTS) {
      const batch: D1PreparedStatement[] = []
      for (let s = 0; s < statementsPerBatch && inserted < POSTS; s += 1) {
        const rows = Math.min(rowsPerStatement, POSTS - inserted)
        const params: Array<number | string> = []
        for (let r = 0; r < rows; r += 1) {
          const n = inserted + r
          // Distinct, older-first timestamps (one per minute) so the cursor walk is realistic.
          const createdAt = now - (POSTS - n) * 60_000
          params.push(
            user.id,
            `Post number ${n}`,
            `Body of post ${n}. ${'Lorem ipsum dolor sit amet. '.repeat(8)}`,
            createdAt,
            createdAt,
          )
        }
        const placeholders = Array.from({ length: rows }, () => '(?, ?, ?, ?, ?)').join(', ')
        batch.push(
          db
            .prepare(`INSERT INTO posts (author_id, title, body, created_at, updated_at) VALUES ${placeholders}`)
            .bind(...params),
        )
        inserted += rows
      }
      await db.batch(batch)
    }
    log(`seeded 1 user and ${POSTS} posts in ${((Date.now() - seedStart) / 1000).toFixed(1)} s`)

    const session = await login()
    log('logged in (access + refresh token)')
    let mainRefresh = session.refresh_token
    /** A fresh access token before each authenticated scenario (ACCESS_TOKEN_TTL is 300 s). */
    const freshAccessToken = async (): Promise<string> => {
      const pair = await expectJson<TokenPair>(
        await jsonPost('/api/v1/auth/token/refresh', { refresh_token: mainRefresh }),
        'refresh',
      )
      mainRefresh = pair.refresh_token
      return pair.access_token
    }

    // The deep cursor: follow `next` DEEP_PAGES pages (or to the last page with a `next`).
    const first = await expectJson<Page>(await api('/api/v1/posts'), 'first page')
    let deepUrl = `${base}/api/v1/posts`
    let depth = 0
    for (let page = first; page.next !== null && depth < DEEP_PAGES; depth += 1) {
      deepUrl = page.next
      page = await expectJson<Page>(await fetch(page.next), `page ${depth + 2}`)
    }
    const deepPath = new URL(deepUrl).pathname + new URL(deepUrl).search
    log(`deep page: ${depth} pages after the first (${depth * 20} posts in)`)
    if (depth < DEEP_PAGES)
      log(`note: only ${depth} pages deep; seed more posts (--posts) for a ${DEEP_PAGES}-page cursor`)

    const postId = first.results[0]?.id
    if (postId === undefined) throw new Error('GET /api/v1/posts returned no posts')
    const etag = (await api(`/api/v1/posts/${postId}`)).headers.get('etag')
    if (etag === null) throw new Error(`GET /api/v1/posts/${postId} sent no ETag`)

    const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
    const scenarios: Scenario[] = [
      {
        name: 'health',
        description: 'GET /api/v1/health (one D1 query + one KV read)',
        ok: [200],
        prepare: async () => ({ url: `${base}/api/v1/health` }),
      },
      {
        name: 'users/me',
        description: 'GET /api/v1/users/me, Bearer access token',
        ok: [200],
        prepare: async () => ({ url: `${base}/api/v1/users/me`, headers: bearer(await freshAccessToken()) }),
      },
      {
        name: 'posts first page',
        description: 'GET /api/v1/posts, anonymous (edge cache)',
        ok: [200],
        prepare: async () => ({ url: `${base}/api/v1/posts` }),
      },
      {
        name: 'posts deep page',
        description: `GET /api/v1/posts?cursor=… ${depth} pages deep, anonymous (edge cache)`,
        ok: [200],
        prepare: async () => ({ url: `${base}${deepPath}` }),
      },
      {
        name: 'posts first page (auth)',
        description: 'GET /api/v1/posts with Authorization: bypasses the edge cache, hits D1',
        ok: [200],
        prepare: async () => ({ url: `${base}/api/v1/posts`, headers: bearer(await freshAccessToken()) }),
      },
      {
        name: 'posts deep page (auth)',
        description: `GET /api/v1/posts?cursor=… ${depth} pages deep with Authorization: bypasses the edge cache, hits D1`,
        ok: [200],
        prepare: async () => ({ url: `${base}${deepPath}`, headers: bearer(await freshAccessToken()) }),
      },
      {
        name: 'post by id',
        description: 'GET /api/v1/posts/{id}, anonymous (edge cache)',
        ok: [200],
        prepare: async () => ({ url: `${base}/api/v1/posts/${postId}` }),
      },
      {
        name: 'post by id, If-None-Match',
        description: 'GET /api/v1/posts/{id} with the current ETag, anonymous: expects 304',
        ok: [304],
        prepare: async () => ({ url: `${base}/api/v1/posts/${postId}`, headers: { 'if-none-match': etag } }),
      },
      {
        name: 'post by id (auth)',
        description: 'GET /api/v1/posts/{id} with Authorization: bypasses the edge cache, hits D1',
        ok: [200],
        prepare: async () => ({ url: `${base}/api/v1/posts/${postId}`, headers: bearer(await freshAccessToken()) }),
      },
      {
        name: 'token refresh',
        description:
          'POST /api/v1/auth/token/refresh: real rotations (each token presented once; no grace-window replays)',
        ok: [200],
        prepare: async () => {
          // Every request presents the *current* refresh token of a session, so each one is a real
          // rotation (read session, conditional UPDATE, sign two JWTs), never a grace-window replay
          // or a reuse. A pool of sessions (two per connection) from real logins; each response's
          // new refresh token goes back into the pool, and a connection takes one out for its next
          // request (a connection has one request in flight, so no token is ever used twice).
          const pool: string[] = []
          for (let i = 0; i < CONNECTIONS * 2; i += 1) pool.push((await login()).refresh_token)
          return {
            url: `${base}/api/v1/auth/token/refresh`,
            requests: [
              {
                method: 'POST',
                path: '/api/v1/auth/token/refresh',
                headers: { 'content-type': 'application/json' },
                setupRequest: (request) => ({
                  ...request,
                  // An empty pool (only if rotations failed) sends an invalid token: counted as an error.
                  body: JSON.stringify({ refresh_token: pool.shift() ?? 'pool-exhausted' }),
                }),
                onResponse: (status, body) => {
                  if (status !== 200) return
                  const token = (JSON.parse(body) as Partial<TokenPair>).refresh_token
                  if (typeof token === 'string') pool.push(token)
                },
              },
            ],
          }
        },
      },
      {
        name: 'token (login)',
        description: 'POST /api/v1/auth/token: password login, CPU-bound by PBKDF2-SHA256 (100 000 iterations)',
        ok: [200],
        prepare: async () => ({
          url: `${base}/api/v1/auth/token`,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(credentials),
        }),
      },
    ]

    const selected = ONLY === undefined ? scenarios : scenarios.filter((scenario) => ONLY.includes(scenario.name))
    if (selected.length === 0)
      throw new Error(`--only matched no scenario; names: ${scenarios.map((s) => s.name).join(', ')}`)

    const results: ScenarioResult[] = []
    for (const [index, scenario] of selected.entries()) {
      const options = await scenario.prepare()
      log(`[${index + 1}/${selected.length}] ${scenario.name}: ${CONNECTIONS} connections for ${DURATION} s …`)
      const run = await cannon({ ...options, connections: CONNECTIONS, duration: DURATION, pipelining: 1, timeout: 30 })
      const statusCodes = Object.fromEntries(
        Object.entries(run.statusCodeStats ?? {}).map(([code, { count }]) => [code, count]),
      )
      const badStatuses = Object.entries(statusCodes)
        .filter(([code]) => !scenario.ok.includes(Number(code)))
        .reduce((sum, [, count]) => sum + count, 0)
      const result: ScenarioResult = {
        name: scenario.name,
        description: scenario.description,
        requestsPerSecond: run.requests.total / run.duration,
        p50Ms: run.latency.p50,
        p99Ms: run.latency.p99,
        meanMs: run.latency.mean,
        total: run.requests.total,
        errors: badStatuses + run.errors,
        statusCodes,
        transportErrors: run.errors,
        timeouts: run.timeouts,
      }
      results.push(result)
      log(
        `[${index + 1}/${selected.length}] ${scenario.name}: ${result.requestsPerSecond.toFixed(0)} req/s, ` +
          `p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.errors} errors (statuses ${JSON.stringify(statusCodes)})`,
      )
    }

    // ---- report -------------------------------------------------------------------------------
    const header = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'errors']
    const rows = results.map((r) => [
      r.name,
      r.requestsPerSecond.toFixed(0),
      String(r.p50Ms),
      String(r.p99Ms),
      String(r.errors),
    ])
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)))
    const line = (cells: string[]) =>
      `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`
    console.log('')
    console.log(line(header))
    console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`)
    for (const row of rows) console.log(line(row))
    console.log('')

    const rps = (name: string) => results.find((r) => r.name === name)?.requestsPerSecond
    const targets: Array<{ name: string; value: number | null; target: string; pass: boolean | null }> = []
    const ratio = (name: string, a: number | undefined, b: number | undefined, min: number, target: string) => {
      const value = a !== undefined && b !== undefined && b > 0 ? a / b : null
      targets.push({ name, value, target, pass: value === null ? null : value >= min })
    }
    ratio('users/me ÷ health (req/s)', rps('users/me'), rps('health'), 0.8, '≥ 0.80')
    ratio(
      'deep ÷ first page, uncached (req/s)',
      rps('posts deep page (auth)'),
      rps('posts first page (auth)'),
      1 / 1.2,
      '≥ 0.83 (deep within 1.2× first)',
    )
    const totalErrors = results.reduce((sum, r) => sum + r.errors, 0)
    targets.push({ name: 'errors (all scenarios)', value: totalErrors, target: '= 0', pass: totalErrors === 0 })
    const info: Array<{ name: string; value: number | null }> = [
      {
        name: 'deep ÷ first page, edge cache (req/s, info)',
        value:
          rps('posts deep page') !== undefined && rps('posts first page')
            ? (rps('posts deep page') ?? 0) / (rps('posts first page') ?? 1)
            : null,
      },
    ]
    for (const t of targets) {
      const verdict = t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'FAIL'
      const shown = t.value === null ? 'not measured' : Number.isInteger(t.value) ? String(t.value) : t.value.toFixed(2)
      console.log(`${verdict}  ${t.name}: ${shown} (target ${t.target})`)
    }
    for (const i of info) if (i.value !== null) console.log(`info  ${i.name}: ${i.value.toFixed(2)}`)
    console.log(
      `\nnotes: load average ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? 0).toFixed(2)} after; ${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}; autocannon and workerd share the machine. ` +
        `Rate limits were bound at ${BENCH_RATE_LIMIT}/60 s so the limiter never refused a request. ` +
        'Anonymous GETs are served by the Cache API after the first miss; the "(auth)" rows bypass it and hit D1.',
    )

    const outDir = join(root, 'bench-results')
    mkdirSync(outDir, { recursive: true })
    const outFile = join(outDir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
    writeFileSync(
      outFile,
      `${JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: {
            cpus: cpus().length,
            model: cpus()[0]?.model,
            node: process.version,
            platform: process.platform,
            loadAverageBefore: loadBefore,
            loadAverageAfter: loadavg()[0],
          },
          options: {
            posts: POSTS,
            durationSeconds: DURATION,
            connections: CONNECTIONS,
            deepPages: depth,
            rateLimit: BENCH_RATE_LIMIT,
          },
          results,
          targets,
          info,
        },
        null,
        2,
      )}\n`,
    )
    log(`results written to ${outFile}`)
    if (STRICT && targets.some((t) => t.pass === false)) failed = true
  } finally {
    if (mf !== undefined) await mf.dispose()
    rmSync(workDir, { recursive: true, force: true })
  }
  if (failed) {
    console.error('bench: a target was missed (--strict)')
    process.exit(1)
  }
}

main().catch((err: unknown) => {
  console.error('bench: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
