// `npm run bench`: HTTP throughput and latency of the built Worker, on the machine it runs on.
//
// 1. Bundles the Worker as it would be deployed and serves the bundle with the Miniflare API,
//    with fresh in-memory D1, KV and cache (scripts/bench/serve.ts).
// 2. Registers one user through the API, inserts N posts straight into D1, logs in. Serves the
//    floor worker (scripts/bench/floor-worker.ts: the same I/O as users/me and nothing else) the
//    same way, with the same JWT_SECRET and the user's row copied into its D1.
// 3. Measures each scenario with autocannon at a fixed concurrency and prints a table, ratios
//    that cancel out machine speed (users/me ÷ floor, users/me ÷ health, deep page ÷ first page) and writes JSON to
//    bench-results/<timestamp>.json.
//
// Options (flags win over environment variables):
//   --posts N        posts to seed (BENCH_POSTS, default 10 000)
//   --duration S     seconds per scenario (BENCH_DURATION, default 10)
//   --connections C  concurrent connections (BENCH_CONNECTIONS, default 10)
//   --only a,b       run only the named scenarios (see scenarios() below)
//   --strict         exit 1 when a target is missed (default: report only)
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { cannon } from './autocannon'
import type { AutocannonOptions } from './autocannon'
import { copyUser, insertPosts, login, postJson, registerUser } from './fixtures'
import type { Credentials, TokenPair } from './fixtures'
import { commaList, positiveNumber } from './flags'
import { printTable, writeResults } from './report'
import { BENCH_RATE_LIMIT, expectJson, log, serveWorker } from './serve'
import type { ServedWorker } from './serve'

const { values: flags } = parseArgs({
  options: {
    posts: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    only: { type: 'string' },
    strict: { type: 'boolean', default: false },
  },
})
const POSTS = positiveNumber('bench', {
  name: '--posts',
  raw: flags.posts ?? process.env.BENCH_POSTS,
  fallback: 10_000,
})
const DURATION = positiveNumber('bench', {
  name: '--duration',
  raw: flags.duration ?? process.env.BENCH_DURATION,
  fallback: 10,
})
const CONNECTIONS = positiveNumber('bench', {
  name: '--connections',
  raw: flags.connections ?? process.env.BENCH_CONNECTIONS,
  fallback: 10,
})
const ONLY = commaList(flags.only)
const STRICT = flags.strict === true
/** An unrecorded run before each measured one, so that neither side of a ratio pays the JIT's warm-up. */
const WARM_UP_SECONDS = 2
/** users/me and the floor worker are measured this many times, alternately; the ratio is the median pair's. */
const FLOOR_PAIRS = 3
/** Pages followed through `next` before the deep-page scenario hammers that cursor. */
const DEEP_PAGES = 100

interface Page {
  results: Array<{ id: number }>
  next: string | null
}

/** What the scenarios need from the served, seeded Worker. */
interface Fixture {
  base: string
  /** The floor worker's base URL. */
  floorBase: string
  credentials: Credentials
  /** The path and query of the cursor DEEP_PAGES pages in (or the last page with a `next`), and how deep it is. */
  deepPath: string
  depth: number
  postId: number
  etag: string
  /** A fresh access token before each authenticated scenario (ACCESS_TOKEN_TTL is 300 s). */
  freshAccessToken: () => Promise<string>
}

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

interface Target {
  name: string
  value: number | null
  target: string
  pass: boolean | null
}

/** Follows `next` from the first page, DEEP_PAGES pages or to the last page with a `next`. */
async function deepCursor(base: string): Promise<{ first: Page; deepPath: string; depth: number }> {
  const first = await expectJson<Page>(await fetch(`${base}/api/v1/posts`), 'first page')
  let deepUrl = `${base}/api/v1/posts`
  let depth = 0
  for (let page = first; page.next !== null && depth < DEEP_PAGES; depth += 1) {
    deepUrl = page.next
    page = await expectJson<Page>(await fetch(page.next), `page ${depth + 2}`)
  }
  log(`deep page: ${depth} pages after the first (${depth * 20} posts in)`)
  if (depth < DEEP_PAGES)
    log(`note: only ${depth} pages deep; seed more posts (--posts) for a ${DEEP_PAGES}-page cursor`)
  return { first, deepPath: new URL(deepUrl).pathname + new URL(deepUrl).search, depth }
}

/** One user through the API, POSTS posts straight into D1, a login, the deep cursor and a post's ETag. */
async function seed(served: ServedWorker, floor: ServedWorker): Promise<Fixture> {
  const { base, db } = served
  const { credentials, userId } = await registerUser(base, db, 'bench')
  await copyUser(db, floor.db, userId)
  const seedStart = Date.now()
  await insertPosts(db, userId, POSTS)
  log(`seeded 1 user and ${POSTS} posts in ${((Date.now() - seedStart) / 1000).toFixed(1)} s`)
  let refreshToken = (await login(base, credentials)).refresh_token
  log('logged in (access + refresh token)')
  const freshAccessToken = async (): Promise<string> => {
    const pair = await expectJson<TokenPair>(
      await postJson(base, '/api/v1/auth/token/refresh', { refresh_token: refreshToken }),
      'refresh',
    )
    refreshToken = pair.refresh_token
    return pair.access_token
  }
  const { first, deepPath, depth } = await deepCursor(base)
  const postId = first.results[0]?.id
  if (postId === undefined) throw new Error('GET /api/v1/posts returned no posts')
  const etag = (await fetch(`${base}/api/v1/posts/${postId}`)).headers.get('etag')
  if (etag === null) throw new Error(`GET /api/v1/posts/${postId} sent no ETag`)
  return { base, floorBase: floor.base, credentials, deepPath, depth, postId, etag, freshAccessToken }
}

/**
 * Every request presents the *current* refresh token of a session, so each one is a real rotation
 * (read session, conditional UPDATE, sign two JWTs), never a grace-window replay or a reuse. A
 * pool of sessions (two per connection) from real logins; each response's new refresh token goes
 * back into the pool, and a connection takes one out for its next request (a connection has one
 * request in flight, so no token is ever used twice).
 */
async function refreshRotations(fixture: Fixture): Promise<Omit<AutocannonOptions, 'connections' | 'duration'>> {
  const pool: string[] = []
  for (let i = 0; i < CONNECTIONS * 2; i += 1) pool.push((await login(fixture.base, fixture.credentials)).refresh_token)
  return {
    url: `${fixture.base}/api/v1/auth/token/refresh`,
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
}

/** A GET scenario: anonymous, or with a fresh access token (which bypasses the edge cache). */
function get(name: string, description: string, url: string, options: { auth?: Fixture; ok?: number } = {}): Scenario {
  const { auth, ok = 200 } = options
  return {
    name,
    description,
    ok: [ok],
    prepare: async () =>
      auth === undefined ? { url } : { url, headers: { authorization: `Bearer ${await auth.freshAccessToken()}` } },
  }
}

function scenarios(fixture: Fixture): Scenario[] {
  const { base, floorBase, deepPath, depth, postId, etag } = fixture
  const auth = { auth: fixture }
  const deep = `GET /api/v1/posts?cursor=… ${depth} pages deep`
  const uncached = 'with Authorization: bypasses the edge cache, hits D1'
  return [
    get('health', 'GET /api/v1/health (one D1 query + one KV read)', `${base}/api/v1/health`),
    get('users/me', 'GET /api/v1/users/me, Bearer access token', `${base}/api/v1/users/me`, auth),
    get(
      'users/me floor',
      'the floor worker: jose verify + one KV read + one D1 read by primary key, JSON (scripts/bench/floor-worker.ts)',
      `${floorBase}/api/v1/users/me`,
      auth,
    ),
    get('posts first page', 'GET /api/v1/posts, anonymous (edge cache)', `${base}/api/v1/posts`),
    get('posts deep page', `${deep}, anonymous (edge cache)`, `${base}${deepPath}`),
    get('posts first page (auth)', `GET /api/v1/posts ${uncached}`, `${base}/api/v1/posts`, auth),
    get('posts deep page (auth)', `${deep} ${uncached}`, `${base}${deepPath}`, auth),
    get('post by id', 'GET /api/v1/posts/{id}, anonymous (edge cache)', `${base}/api/v1/posts/${postId}`),
    {
      name: 'post by id, If-None-Match',
      description: 'GET /api/v1/posts/{id} with the current ETag, anonymous: expects 304',
      ok: [304],
      prepare: async () => ({ url: `${base}/api/v1/posts/${postId}`, headers: { 'if-none-match': etag } }),
    },
    get('post by id (auth)', `GET /api/v1/posts/{id} ${uncached}`, `${base}/api/v1/posts/${postId}`, auth),
    {
      name: 'token refresh',
      description:
        'POST /api/v1/auth/token/refresh: real rotations (each token presented once; no grace-window replays)',
      ok: [200],
      prepare: () => refreshRotations(fixture),
    },
    {
      name: 'token (login)',
      description: 'POST /api/v1/auth/token: password login, CPU-bound by PBKDF2-SHA256 (100 000 iterations)',
      ok: [200],
      prepare: async () => ({
        url: `${base}/api/v1/auth/token`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(fixture.credentials),
      }),
    },
  ]
}

/** The scenarios --only names (all without it). */
function selectScenarios(all: Scenario[]): Scenario[] {
  const selected = ONLY === undefined ? all : all.filter((scenario) => ONLY.includes(scenario.name))
  if (selected.length === 0) throw new Error(`--only matched no scenario; names: ${all.map((s) => s.name).join(', ')}`)
  return selected
}

async function runScenario(scenario: Scenario, label: string): Promise<ScenarioResult> {
  const options = await scenario.prepare()
  log(
    `${label} ${scenario.name}: ${CONNECTIONS} connections for ${DURATION} s (after ${WARM_UP_SECONDS} s unrecorded) …`,
  )
  await cannon({ ...options, connections: CONNECTIONS, duration: WARM_UP_SECONDS, pipelining: 1, timeout: 30 })
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
  log(
    `${label} ${scenario.name}: ${result.requestsPerSecond.toFixed(0)} req/s, ` +
      `p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.errors} errors (statuses ${JSON.stringify(statusCodes)})`,
  )
  return result
}

/** users/me ÷ floor of each alternate pair (the first pair is the main run's). */
type FloorPairs = Array<{ me: number; floor: number; ratio: number }>

/**
 * Measures users/me and the floor worker FLOOR_PAIRS - 1 more times, alternately, so that the
 * ratio does not hang on one run of each on a shared machine (the main run gave the first pair).
 */
async function floorPairs(selected: Scenario[], results: ScenarioResult[]): Promise<FloorPairs> {
  const me = selected.find((s) => s.name === 'users/me')
  const floor = selected.find((s) => s.name === 'users/me floor')
  const first = {
    me: results.find((r) => r.name === 'users/me')?.requestsPerSecond,
    floor: results.find((r) => r.name === 'users/me floor')?.requestsPerSecond,
  }
  if (me === undefined || floor === undefined || first.me === undefined || first.floor === undefined) return []
  const pairs: FloorPairs = [{ me: first.me, floor: first.floor, ratio: first.me / first.floor }]
  for (let pair = 2; pair <= FLOOR_PAIRS; pair += 1) {
    const again = await runScenario(me, `[pair ${pair}/${FLOOR_PAIRS}]`)
    const againFloor = await runScenario(floor, `[pair ${pair}/${FLOOR_PAIRS}]`)
    pairs.push({
      me: again.requestsPerSecond,
      floor: againFloor.requestsPerSecond,
      ratio: again.requestsPerSecond / againFloor.requestsPerSecond,
    })
  }
  return pairs
}

function medianOf(values: number[]): number | null {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? null : (sorted[Math.floor(sorted.length / 2)] ?? null)
}

/** The targets (ratios that cancel out machine speed, and no errors) and the informational ratios. */
function evaluate(
  results: ScenarioResult[],
  pairs: FloorPairs,
): {
  targets: Target[]
  info: Array<{ name: string; value: number | null }>
} {
  const rps = (name: string): number | undefined => results.find((r) => r.name === name)?.requestsPerSecond
  const ratio = (a: number | undefined, b: number | undefined): number | null =>
    a !== undefined && b !== undefined && b > 0 ? a / b : null
  const atLeast = (name: string, value: number | null, min: number, target: string): Target => ({
    name,
    value,
    target,
    pass: value === null ? null : value >= min,
  })
  const totalErrors = results.reduce((sum, r) => sum + r.errors, 0)
  const targets = [
    atLeast(
      `users/me ÷ floor worker (req/s, median of ${pairs.length} alternate pairs)`,
      medianOf(pairs.map((p) => p.ratio)),
      0.8,
      '≥ 0.80',
    ),
    atLeast('users/me ÷ health (req/s)', ratio(rps('users/me'), rps('health')), 0.8, '≥ 0.80'),
    atLeast(
      'deep ÷ first page, uncached (req/s)',
      ratio(rps('posts deep page (auth)'), rps('posts first page (auth)')),
      1 / 1.2,
      '≥ 0.83 (deep within 1.2× first)',
    ),
    { name: 'errors (all scenarios)', value: totalErrors, target: '= 0', pass: totalErrors === 0 },
  ]
  const cached = ratio(rps('posts deep page'), rps('posts first page'))
  const info = [{ name: 'deep ÷ first page, edge cache (req/s, info)', value: cached }]
  for (const [index, pair] of pairs.entries())
    info.push({
      name: `users/me ÷ floor, pair ${index + 1} (${pair.me.toFixed(0)} / ${pair.floor.toFixed(0)} req/s)`,
      value: pair.ratio,
    })
  return { targets, info }
}

function printReport(results: ScenarioResult[], evaluation: ReturnType<typeof evaluate>, loadBefore: number): void {
  printTable(
    ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'errors'],
    results.map((r) => [r.name, r.requestsPerSecond.toFixed(0), String(r.p50Ms), String(r.p99Ms), String(r.errors)]),
  )
  for (const t of evaluation.targets) {
    const verdict = t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'FAIL'
    const shown = t.value === null ? 'not measured' : Number.isInteger(t.value) ? String(t.value) : t.value.toFixed(2)
    console.log(`${verdict}  ${t.name}: ${shown} (target ${t.target})`)
  }
  for (const i of evaluation.info) if (i.value !== null) console.log(`info  ${i.name}: ${i.value.toFixed(2)}`)
  console.log(
    `\nnotes: load average ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? 0).toFixed(2)} after; ${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}; autocannon and workerd share the machine. ` +
      `Rate limits were bound at ${BENCH_RATE_LIMIT}/60 s so the limiter never refused a request. ` +
      'Anonymous GETs are served by the Cache API after the first miss; the "(auth)" rows bypass it and hit D1.',
  )
}

function saveResults(
  results: ScenarioResult[],
  evaluation: ReturnType<typeof evaluate>,
  run: { loadBefore: number; depth: number },
): void {
  const date = new Date().toISOString()
  writeResults('', date, {
    date,
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      node: process.version,
      platform: process.platform,
      loadAverageBefore: run.loadBefore,
      loadAverageAfter: loadavg()[0],
    },
    options: {
      posts: POSTS,
      durationSeconds: DURATION,
      connections: CONNECTIONS,
      deepPages: run.depth,
      rateLimit: BENCH_RATE_LIMIT,
    },
    results,
    targets: evaluation.targets,
    info: evaluation.info,
  })
}

/** Serves and seeds the Worker, runs the selected scenarios, reports; true when every target holds. */
async function bench(workDir: string, loadBefore: number): Promise<boolean> {
  // One secret for both, so one access token verifies at each.
  const vars = { JWT_SECRET: randomBytes(48).toString('base64url') }
  const served = await serveWorker({ workDir: join(workDir, 'app'), vars })
  const floor = await serveWorker({ workDir: join(workDir, 'floor'), entry: 'scripts/bench/floor-worker.ts', vars })
  try {
    const fixture = await seed(served, floor)
    const selected = selectScenarios(scenarios(fixture))
    const results: ScenarioResult[] = []
    for (const [index, scenario] of selected.entries())
      results.push(await runScenario(scenario, `[${index + 1}/${selected.length}]`))
    const evaluation = evaluate(results, await floorPairs(selected, results))
    printReport(results, evaluation, loadBefore)
    saveResults(results, evaluation, { loadBefore, depth: fixture.depth })
    return evaluation.targets.every((t) => t.pass !== false)
  } finally {
    await Promise.all([served.dispose(), floor.dispose()])
  }
}

async function main(): Promise<void> {
  const loadBefore = loadavg()[0] ?? 0
  if (loadBefore > 0.5) {
    log(
      `warning: load average is ${loadBefore.toFixed(2)} before the bench: other work shares these ${cpus().length} CPUs, so absolute numbers will be low and noisy`,
    )
  }
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-bench-'))
  let allHeld: boolean
  try {
    allHeld = await bench(workDir, loadBefore)
  } finally {
    rmSync(workDir, { recursive: true, force: true })
  }
  if (STRICT && !allHeld) {
    console.error('bench: a target was missed (--strict)')
    process.exit(1)
  }
}

main().catch((err: unknown) => {
  console.error('bench: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
