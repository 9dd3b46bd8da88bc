// `npm run bench:geo`: what a client far from the D1 primary waits, per region, next to a single
// origin server in the primary's region. A latency model, not a measurement of production.
//
// 1. Bundles scripts/bench/geo-worker.ts (the real app with modelled binding round trips; bench-only,
//    never deployed) with `wrangler deploy scripts/bench/geo-worker.ts --dry-run --minify --outdir`.
// 2. Serves it with the Miniflare API, fresh in-memory D1/KV/cache, migrations applied, one user
//    registered through the API and posts inserted straight into D1.
// 3. For each endpoint, sends sequential requests with `x-bench-region: <region>`: the worker waits
//    the modelled round trips of that region for every D1, KV, Cache API and rate-limiter call
//    (real sleeps, so calls the app overlaps overlap). The client is local, so the client↔PoP
//    round trip is added to each measured latency afterwards.
// 4. Sends the same requests without a region (every wait zero: a database next to the server) for
//    the single-origin baseline: client↔origin round trip (client↔PoP + PoP(region)↔Virginia) plus
//    that local time.
// 5. Prints a table (edge p50 / single-origin p50 / ratio per region), the Sydney targets, and writes
//    bench-results/geo-<timestamp>.json. A report: it exits 0 whether or not targets hold.
//
// Options (flags win over environment variables):
//   --samples N   sequential requests per endpoint and region (BENCH_GEO_SAMPLES, default 30)
//   --regions a,b regions to run (default: all in scripts/bench/geo-rtt.json)
//   --only a,b    endpoints to run: health, me, me-cold-kv, posts-auth, posts-edge, post-miss, create,
//                 login, refresh
//   --posts N     posts to seed (default 1000)
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import type { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { Miniflare } from 'miniflare'
import { unstable_readConfig } from 'wrangler'
import { root } from '../project-root'
import { buildBundle, log, readMigrations } from './serve'
import type { GeoModel, GeoWaits } from './geo-worker'

// Spelled as in geo-worker.ts.
const REGION_HEADER = 'x-bench-region'
const KV_HEADER = 'x-bench-kv'
const COUNTS_HEADER = 'x-bench-geo'
const BENCH_RATE_LIMIT = 1_000_000_000

const { values: flags } = parseArgs({
  options: {
    samples: { type: 'string' },
    regions: { type: 'string' },
    only: { type: 'string' },
    posts: { type: 'string' },
  },
})

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) {
    console.error(`bench:geo: ${name} must be a positive integer, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return value
}

const SAMPLES = positiveInt('--samples', flags.samples ?? process.env.BENCH_GEO_SAMPLES, 30)
const POSTS = positiveInt('--posts', flags.posts, 1000)
const list = (raw: string | undefined) =>
  raw
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean)

// ---- the model ----------------------------------------------------------------------------------

interface RegionAssumptions {
  label: string
  clientToPopMs: number
  popToPrimaryMs: number
  d1ReplicaRegion: string
  popToReplicaMs: number
}

interface RttFile {
  primaryRegion: string
  regions: Record<string, RegionAssumptions>
  kv: { hotReadMs: number }
  cacheApiMs: number
  rateLimitMs: number
  sources: Record<string, string>
}

const rtt = JSON.parse(readFileSync(join(root, 'scripts', 'bench', 'geo-rtt.json'), 'utf8')) as RttFile
const REGIONS = list(flags.regions) ?? Object.keys(rtt.regions)
for (const name of REGIONS)
  if (rtt.regions[name] === undefined)
    throw new Error(`unknown region ${name}; geo-rtt.json has ${Object.keys(rtt.regions).join(', ')}`)

/** What the worker waits in each region: D1 primary, KV central stores and origin share the primary's location. */
function waitsOf(region: RegionAssumptions): GeoWaits {
  return {
    d1PrimaryMs: region.popToPrimaryMs,
    d1ReplicaMs: region.popToReplicaMs,
    kvHotReadMs: rtt.kv.hotReadMs,
    kvColdReadMs: region.popToPrimaryMs,
    kvWriteMs: region.popToPrimaryMs,
    cacheMs: rtt.cacheApiMs,
    rateLimitMs: rtt.rateLimitMs,
  }
}
const model: GeoModel = {
  regions: Object.fromEntries(Object.entries(rtt.regions).map(([name, r]) => [name, waitsOf(r)])),
}

// ---- helpers ---------------------------------------------------------------------------------------

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2
}

/** The most frequent value (how a typical request of a scenario went). */
const mode = (values: string[]): string => {
  const counts = new Map<string, number>()
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1)
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? ''
}

interface TokenPair {
  access_token: string
  refresh_token: string
}

// ---- scenarios ----------------------------------------------------------------------------------

/** One client: its tokens and the newest X-D1-Bookmark it was given (sent back, as docs/clients.md advises). */
interface Client {
  access: string
  refresh: string
  bookmark: string | undefined
}

interface Scenario {
  /** Short name for --only. */
  id: string
  name: string
  /** Status expected of every measured response. */
  status: number
  /** X-Edge-Cache expected of every measured response (absent: not checked). */
  edgeCache?: 'HIT' | 'MISS'
  kvCold?: boolean
  signedIn?: boolean
  /** Run once, unmeasured and with zero waits, before the samples of a region (e.g. fill the edge cache). */
  warm?: boolean
  request: (client: Client) => { path: string; init?: RequestInit }
  /** Reads what the next request needs from a response (rotated refresh tokens). */
  onBody?: (client: Client, body: string) => void
}

interface Measured {
  /** Local latency of each request, ms (no client↔PoP time). */
  samples: number[]
  p50Ms: number
  /** Typical x-bench-geo counts and Server-Timing of a request. */
  calls: string
  serverTiming: string
  edgeCache: Record<string, number>
}

async function main(): Promise<void> {
  const config = unstable_readConfig({ config: join(root, 'wrangler.toml') })
  const load = loadavg()[0] ?? 0
  if (load > 1)
    log(
      `warning: load average ${load.toFixed(2)}: other work shares the CPUs, so the local part of each latency will be noisy`,
    )
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-bench-geo-'))
  let mf: Miniflare | undefined
  try {
    // Which code is measured: the commit, and the files of src/ and migrations/ changed on top of it.
    const git = (...args: string[]) => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout.trim()
    const code = {
      commit: git('rev-parse', 'HEAD'),
      uncommitted: git('status', '--porcelain', '--', 'src', 'migrations').split('\n').filter(Boolean),
    }
    log(
      `building scripts/bench/geo-worker.ts (wrangler deploy --dry-run --minify) at ${code.commit.slice(0, 7)}${code.uncommitted.length > 0 ? ` + ${code.uncommitted.length} uncommitted files in src/ and migrations/` : ''}`,
    )
    const scriptPath = buildBundle(join(workDir, 'dist'), 'scripts/bench/geo-worker.ts')
    mf = new Miniflare({
      scriptPath,
      modules: true,
      modulesRoot: dirname(scriptPath),
      compatibilityDate: config.compatibility_date,
      compatibilityFlags: config.compatibility_flags,
      host: '127.0.0.1',
      port: 0,
      d1Databases: { DB: 'bench-geo-db' },
      kvNamespaces: ['REVOKED_TOKENS'],
      ratelimits: Object.fromEntries(
        config.ratelimits.map(({ name }: { name: string }) => [
          name,
          { simple: { limit: BENCH_RATE_LIMIT, period: 60 as const } },
        ]),
      ),
      bindings: {
        ...(config.vars as Record<string, string>),
        JWT_SECRET: randomBytes(48).toString('base64url'),
        LOG_REQUESTS: 'false',
        MAIL_TRANSPORT: 'console',
        BENCH_GEO_MODEL: JSON.stringify(model),
      },
      logRequests: false,
      handleRuntimeStdio: (stdout: Readable, stderr: Readable) => {
        stdout.resume()
        stderr.pipe(process.stderr)
      },
    })
    const base = (await mf.ready).toString().replace(/\/$/, '')
    const db = await mf.getD1Database('DB')
    for (const statement of readMigrations().flatMap((migration) => migration.statements))
      await db.prepare(statement).run()

    const send = (path: string, init: RequestInit = {}) => fetch(`${base}${path}`, init)
    const postJson = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      send(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      })
    const expectOk = async (response: Response, what: string, status = 200): Promise<string> => {
      const text = await response.text()
      if (response.status !== status)
        throw new Error(`${what}: expected ${status}, got ${response.status}: ${text.slice(0, 300)}`)
      return text
    }

    const credentials = { username: 'geo', password: `geo-${randomBytes(9).toString('base64url')}` }
    await expectOk(
      await postJson('/api/v1/auth/register', { ...credentials, email: 'geo@example.com' }),
      'register',
      201,
    )
    const user = await db
      .prepare('SELECT id FROM users WHERE username = ?')
      .bind(credentials.username)
      .first<{ id: number }>()
    if (user === null) throw new Error('the registered user is not in D1')
    const now = Date.now()
    for (let first = 0; first < POSTS; first += 400) {
      const statements: D1PreparedStatement[] = []
      for (let n = first; n < Math.min(POSTS, first + 400); n += 20) {
        const rows = Array.from({ length: Math.min(20, POSTS - n) }, (_, r) => n + r)
        const params = rows.flatMap((i) => [
          user.id,
          `Post number ${i}`,
          `Body of post ${i}. ${'Lorem ipsum dolor sit amet. '.repeat(8)}`,
          now - (POSTS - i) * 60_000,
          now - (POSTS - i) * 60_000,
        ])
        statements.push(
          db
            .prepare(
              `INSERT INTO posts (author_id, title, body, created_at, updated_at) VALUES ${rows.map(() => '(?, ?, ?, ?, ?)').join(', ')}`,
            )
            .bind(...params),
        )
      }
      await db.batch(statements)
    }
    const postIds = (await db.prepare('SELECT id FROM posts ORDER BY id').all<{ id: number }>()).results.map(
      (r) => r.id,
    )
    log(`serving ${scriptPath} at ${base}; seeded 1 user and ${postIds.length} posts`)

    const login = async (): Promise<TokenPair> =>
      JSON.parse(await expectOk(await postJson('/api/v1/auth/token', credentials), 'login')) as TokenPair
    const pair = await login()
    const client: Client = { access: pair.access_token, refresh: pair.refresh_token, bookmark: undefined }
    /** A fresh access token before each signed-in run (ACCESS_TOKEN_TTL is 300 s); zero waits. */
    const refreshTokens = async () => {
      const next = JSON.parse(
        await expectOk(await postJson('/api/v1/auth/token/refresh', { refresh_token: client.refresh }), 'refresh'),
      ) as TokenPair
      client.access = next.access_token
      client.refresh = next.refresh_token
    }
    let nextPost = 0
    const bearer = (c: Client) => ({ authorization: `Bearer ${c.access}` })

    const all: Scenario[] = [
      { id: 'health', name: 'GET /health', status: 200, request: () => ({ path: '/api/v1/health' }) },
      {
        id: 'me',
        name: 'GET /users/me (signed in)',
        status: 200,
        signedIn: true,
        request: (c) => ({ path: '/api/v1/users/me', init: { headers: bearer(c) } }),
      },
      {
        id: 'me-cold-kv',
        name: 'GET /users/me (signed in, cold KV read)',
        status: 200,
        signedIn: true,
        kvCold: true,
        request: (c) => ({ path: '/api/v1/users/me', init: { headers: bearer(c) } }),
      },
      {
        id: 'posts-auth',
        name: 'GET /posts?limit=20 (signed in)',
        status: 200,
        signedIn: true,
        request: (c) => ({ path: '/api/v1/posts?limit=20', init: { headers: bearer(c) } }),
      },
      {
        id: 'posts-edge',
        name: 'GET /posts?limit=20 (anonymous, edge cache)',
        status: 200,
        edgeCache: 'HIT',
        warm: true,
        request: () => ({ path: '/api/v1/posts?limit=20' }),
      },
      {
        id: 'post-miss',
        name: 'GET /posts/{id} (anonymous, cache miss)',
        status: 200,
        edgeCache: 'MISS',
        // A different post each time, so every request misses the edge cache and reads D1.
        request: () => ({ path: `/api/v1/posts/${postIds[nextPost++ % postIds.length] ?? 1}` }),
      },
      {
        id: 'create',
        name: 'POST /posts (create)',
        status: 201,
        signedIn: true,
        request: (c) => ({
          path: '/api/v1/posts',
          init: {
            method: 'POST',
            headers: { ...bearer(c), 'content-type': 'application/json' },
            body: JSON.stringify({ title: 'From afar', body: 'Written through the latency model.' }),
          },
        }),
      },
      {
        id: 'login',
        name: 'POST /auth/token (login, PBKDF2)',
        status: 200,
        request: () => ({
          path: '/api/v1/auth/token',
          init: { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(credentials) },
        }),
      },
      {
        id: 'refresh',
        name: 'POST /auth/token/refresh',
        status: 200,
        request: (c) => ({
          path: '/api/v1/auth/token/refresh',
          init: {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ refresh_token: c.refresh }),
          },
        }),
        onBody: (c, body) => {
          const next = JSON.parse(body) as TokenPair
          c.refresh = next.refresh_token
          c.access = next.access_token
        },
      },
    ]
    const only = list(flags.only)
    const scenarios = only === undefined ? all : all.filter((s) => only.includes(s.id))
    if (scenarios.length === 0) throw new Error(`--only matched nothing; ids: ${all.map((s) => s.id).join(', ')}`)

    /** One request with the region's waits (or none), timed from send to the last byte. */
    const once = async (scenario: Scenario, region: string | undefined) => {
      const { path, init = {} } = scenario.request(client)
      const headers = new Headers(init.headers)
      if (region !== undefined) headers.set(REGION_HEADER, region)
      if (scenario.kvCold === true) headers.set(KV_HEADER, 'cold')
      if (client.bookmark !== undefined) headers.set('x-d1-bookmark', client.bookmark)
      const started = performance.now()
      const response = await send(path, { ...init, headers })
      const body = await response.text()
      const ms = performance.now() - started
      if (response.status !== scenario.status)
        throw new Error(
          `${scenario.name} (${region ?? 'local'}): expected ${scenario.status}, got ${response.status}: ${body.slice(0, 300)}`,
        )
      client.bookmark = response.headers.get('x-d1-bookmark') ?? client.bookmark
      scenario.onBody?.(client, body)
      return {
        ms,
        calls: response.headers.get(COUNTS_HEADER) ?? '',
        serverTiming: response.headers.get('server-timing') ?? '',
        edgeCache: response.headers.get('x-edge-cache') ?? 'none',
      }
    }

    const measure = async (scenario: Scenario, region: string | undefined): Promise<Measured> => {
      if (scenario.signedIn === true) await refreshTokens()
      if (scenario.warm === true) await once(scenario, undefined)
      const runs = []
      for (let i = 0; i < SAMPLES; i += 1) runs.push(await once(scenario, region))
      const edgeCache: Record<string, number> = {}
      for (const r of runs) edgeCache[r.edgeCache] = (edgeCache[r.edgeCache] ?? 0) + 1
      if (scenario.edgeCache !== undefined && edgeCache[scenario.edgeCache] !== SAMPLES) {
        log(
          `warning: ${scenario.name} (${region ?? 'local'}): expected X-Edge-Cache ${scenario.edgeCache} on every request, got ${JSON.stringify(edgeCache)}`,
        )
      }
      const samples = runs.map((r) => Math.round(r.ms * 100) / 100)
      return {
        samples,
        p50Ms: median(samples),
        calls: mode(runs.map((r) => r.calls)),
        serverTiming: mode(runs.map((r) => r.serverTiming.replace(/dur=[0-9.]+/g, 'dur=…'))),
        edgeCache,
      }
    }

    // Warm the isolate (JIT, config, keys) with zero waits; nothing here is recorded.
    for (const scenario of scenarios)
      for (let i = 0; i < 3; i += 1) {
        if (scenario.signedIn === true) await refreshTokens()
        if (scenario.warm === true) await once(scenario, undefined)
        await once(scenario, undefined)
      }

    log(
      `${scenarios.length} endpoints × (${REGIONS.length} regions + the local baseline) × ${SAMPLES} sequential requests`,
    )

    const baseline = new Map<string, Measured>()
    for (const scenario of scenarios) {
      baseline.set(scenario.name, await measure(scenario, undefined))
      log(`local (all waits zero)  ${scenario.name}: p50 ${baseline.get(scenario.name)?.p50Ms.toFixed(1)} ms`)
    }
    const edge = new Map<string, Map<string, Measured>>()
    for (const region of REGIONS) {
      const byScenario = new Map<string, Measured>()
      edge.set(region, byScenario)
      for (const scenario of scenarios) {
        const m = await measure(scenario, region)
        byScenario.set(scenario.name, m)
        log(`${region.padEnd(10)} ${scenario.name}: p50 ${m.p50Ms.toFixed(1)} ms at the worker (${m.calls})`)
      }
    }

    // ---- model: add the client's round trips -----------------------------------------------------
    interface Cell {
      region: string
      edgeP50Ms: number
      originP50Ms: number
      ratio: number
      edgeLocalP50Ms: number
      originLocalP50Ms: number
      clientToPopMs: number
      clientToOriginMs: number
      calls: string
      serverTiming: string
      edgeCache: Record<string, number>
      edgeSamplesMs: number[]
    }
    const rows = scenarios.map((scenario) => {
      const local = baseline.get(scenario.name)!
      const cells: Cell[] = REGIONS.map((region) => {
        const assumptions = rtt.regions[region]!
        const m = edge.get(region)!.get(scenario.name)!
        const clientToOriginMs = assumptions.clientToPopMs + assumptions.popToPrimaryMs
        const edgeP50Ms = assumptions.clientToPopMs + m.p50Ms
        const originP50Ms = clientToOriginMs + local.p50Ms
        return {
          region,
          edgeP50Ms,
          originP50Ms,
          ratio: edgeP50Ms / originP50Ms,
          edgeLocalP50Ms: m.p50Ms,
          originLocalP50Ms: local.p50Ms,
          clientToPopMs: assumptions.clientToPopMs,
          clientToOriginMs,
          calls: m.calls,
          serverTiming: m.serverTiming,
          edgeCache: m.edgeCache,
          edgeSamplesMs: m.samples,
        }
      })
      return { name: scenario.name, localSamplesMs: local.samples, cells }
    })

    // ---- report ---------------------------------------------------------------------------------
    const labels = REGIONS.map((r) => rtt.regions[r]?.label ?? r)
    const header = ['p50 ms: edge / single origin (ratio)', ...labels]
    const body = rows.map((row) => [
      row.name,
      ...row.cells.map((c) => `${c.edgeP50Ms.toFixed(0)} / ${c.originP50Ms.toFixed(0)} (${c.ratio.toFixed(2)})`),
    ])
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)))
    const line = (cells: string[]) =>
      `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`
    console.log('')
    console.log(line(header))
    console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`)
    for (const r of body) console.log(line(r))
    console.log('')
    const shown = REGIONS.includes('sydney') ? 'sydney' : REGIONS[REGIONS.length - 1]!
    console.log(`modelled calls of a typical request in ${rtt.regions[shown]?.label ?? shown} (x-bench-geo):`)
    for (const row of rows) console.log(`  ${row.name}: ${row.cells.find((c) => c.region === shown)?.calls ?? ''}`)
    console.log('')

    const targets = [
      { name: 'signed-in GET /users/me', scenario: 'GET /users/me (signed in)', max: 0.33 },
      {
        name: 'anonymous post list from the edge cache',
        scenario: 'GET /posts?limit=20 (anonymous, edge cache)',
        max: 0.1,
      },
      { name: 'write: POST /posts', scenario: 'POST /posts (create)', max: 1.1 },
    ].map((target) => {
      const cell = rows.find((r) => r.name === target.scenario)?.cells.find((c) => c.region === 'sydney')
      if (cell === undefined)
        return { ...target, ratio: null, pass: null, note: 'not measured (needs sydney and this endpoint)' }
      // ratio(a) = (a + e) / (a + o) for a client↔PoP RTT a: where does it cross the target?
      const e = cell.edgeLocalP50Ms
      const o = cell.clientToOriginMs - cell.clientToPopMs + cell.originLocalP50Ms
      const t = target.max
      const breakEven = t === 1 ? null : (t * o - e) / (1 - t)
      const note =
        breakEven === null
          ? ''
          : t < 1
            ? breakEven < 0
              ? 'fails for any client↔PoP RTT'
              : `holds while client↔PoP RTT ≤ ${breakEven.toFixed(0)} ms`
            : breakEven <= 0
              ? 'holds for any client↔PoP RTT'
              : `holds only for client↔PoP RTT ≥ ${breakEven.toFixed(0)} ms`
      return { ...target, ratio: cell.ratio, pass: cell.ratio <= t, note }
    })
    for (const t of targets) {
      const verdict = t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'FAIL'
      console.log(
        `${verdict}  Sydney, ${t.name}: ${t.ratio === null ? '–' : t.ratio.toFixed(2)} of single origin (target ≤ ${t.max}; ${t.note}; assumed ${rtt.regions.sydney?.clientToPopMs ?? '?'} ms)`,
      )
    }
    console.log(
      '\nnotes: a model, not a measurement: round trips from scripts/bench/geo-rtt.json are slept in the worker; local D1/KV/cache and CPU time ' +
        '(PBKDF2 included) are measured on this machine, and the same for both columns. Single origin = client↔PoP + PoP↔Virginia + the local ' +
        'time of the same request with every wait zero. KV reads are hot except in the "cold KV read" row.',
    )

    const outDir = join(root, 'bench-results')
    mkdirSync(outDir, { recursive: true })
    const date = new Date().toISOString()
    const outFile = join(outDir, `geo-${date.replace(/[:.]/g, '-')}.json`)
    writeFileSync(
      outFile,
      `${JSON.stringify({ date, code, options: { samples: SAMPLES, posts: postIds.length, regions: REGIONS }, assumptions: rtt, waits: model, rows, targets }, null, 2)}\n`,
    )
    log(`results written to ${outFile}`)
  } finally {
    if (mf !== undefined) await mf.dispose()
    rmSync(workDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error('bench:geo: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
