// `npm run bench:geo`: what a client far from the D1 primary waits, per region, next to a single
// origin server in the primary's region. A latency model, not a measurement of production.
//
// 1. Bundles scripts/bench/geo-worker.ts (the real app with modelled binding round trips;
//    bench-only, never deployed) and serves it as every benchmark is served (scripts/bench/serve.ts):
//    Miniflare, fresh in-memory D1/KV/cache, migrations applied; then one user registered through
//    the API and posts inserted straight into D1.
// 2. For each endpoint, sends sequential requests with `x-bench-region: <region>`: the worker waits
//    the modelled round trips of that region for every D1, KV, Cache API and rate-limiter call
//    (real sleeps, so calls the app overlaps overlap). The client is local, so the client↔PoP
//    round trip is added to each measured latency afterwards.
// 3. Sends the same requests without a region (every wait zero: a database next to the server) for
//    the single-origin baseline: client↔origin round trip (client↔PoP + PoP(region)↔Virginia) plus
//    that local time.
// 4. Prints a table (edge p50 / single-origin p50 / ratio per region), the Sydney targets, and writes
//    bench-results/geo-<timestamp>.json. A report: it exits 0 whether or not targets hold.
//
// Options (flags win over environment variables):
//   --samples N   sequential requests per endpoint and region (BENCH_GEO_SAMPLES, default 30)
//   --regions a,b regions to run (default: all in scripts/bench/geo-rtt.json)
//   --only a,b    endpoints to run: health, me, me-cold-kv, posts-auth, posts-edge, post-miss, create,
//                 login, refresh
//   --posts N     posts to seed (default 1000)
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { root } from '../project-root'
import { insertPosts, login, registerUser } from './fixtures'
import type { Credentials, TokenPair } from './fixtures'
import { commaList, positiveNumber } from './flags'
import type { GeoModel, GeoWaits } from './geo-worker'
import { printTable, writeResults } from './report'
import { expectJson, log, serveWorker } from './serve'
import type { ServedWorker } from './serve'

// Spelled as in geo-worker.ts.
const REGION_HEADER = 'x-bench-region'
const KV_HEADER = 'x-bench-kv'
const LOCATION_HEADER = 'x-bench-location'
const COUNTS_HEADER = 'x-bench-geo'

const { values: flags } = parseArgs({
  options: {
    samples: { type: 'string' },
    regions: { type: 'string' },
    only: { type: 'string' },
    posts: { type: 'string' },
  },
})
const SAMPLES = positiveNumber('bench:geo', {
  name: '--samples',
  raw: flags.samples ?? process.env.BENCH_GEO_SAMPLES,
  fallback: 30,
})
const POSTS = positiveNumber('bench:geo', { name: '--posts', raw: flags.posts, fallback: 1000 })

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
const REGIONS = commaList(flags.regions) ?? Object.keys(rtt.regions)
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

// ---- statistics ---------------------------------------------------------------------------------

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2
}

/** The most frequent value (how a typical request of a scenario went). */
function mode(values: string[]): string {
  const counts = new Map<string, number>()
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1)
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? ''
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
  /**
   * KV at the location (geo-worker.ts): every key hot (absent), every key cold, or `idle`: the
   * session's own key cold and the shared revocation filter hot.
   */
  kv?: 'cold' | 'idle'
  signedIn?: boolean
  /** Run once, unmeasured and with zero waits, before the samples of a region (e.g. fill the edge cache). */
  warm?: boolean
  request: (client: Client) => { path: string; init?: RequestInit }
  /** Run before the samples of each region, unmeasured (e.g. revoke a fresh session). */
  before?: (session: Session) => Promise<void>
  /** Reads what the next request needs from a response (rotated refresh tokens). */
  onBody?: (client: Client, body: string) => void
}

/** The served Worker and the one client that talks to it. */
interface Session {
  base: string
  client: Client
  credentials: Credentials
  postIds: number[]
  /** An access token whose session was revoked at another location (me-revoked). */
  revokedAccess: string
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

const bearer = (c: Client): Record<string, string> => ({ authorization: `Bearer ${c.access}` })
const jsonPost = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: 'POST',
  headers: { ...headers, 'content-type': 'application/json' },
  body: JSON.stringify(body),
})

/** A signed-in GET of `path`. */
function signedInGet(id: string, name: string, path: string, extra: Partial<Scenario> = {}): Scenario {
  return { id, name, status: 200, signedIn: true, request: (c) => ({ path, init: { headers: bearer(c) } }), ...extra }
}

function scenarios(session: Session): Scenario[] {
  let nextPost = 0
  return [
    { id: 'health', name: 'GET /health', status: 200, request: () => ({ path: '/api/v1/health' }) },
    signedInGet('me', 'GET /users/me (signed in)', '/api/v1/users/me'),
    signedInGet('me-idle', 'GET /users/me (idle session, first request)', '/api/v1/users/me', { kv: 'idle' }),
    signedInGet('me-cold-kv', 'GET /users/me (signed in, every KV read cold)', '/api/v1/users/me', { kv: 'cold' }),
    {
      id: 'me-revoked',
      name: 'GET /users/me (session revoked at another location)',
      status: 401,
      kv: 'idle',
      before: revokeElsewhere,
      request: () => ({
        path: '/api/v1/users/me',
        init: { headers: { authorization: `Bearer ${session.revokedAccess}` } },
      }),
      onBody: (_c, body) => {
        const code = (JSON.parse(body) as { code?: string }).code
        if (code !== 'token_revoked') throw new Error(`me-revoked: expected token_revoked, got ${code}`)
      },
    },
    signedInGet('posts-auth', 'GET /posts?limit=20 (signed in)', '/api/v1/posts?limit=20'),
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
      request: () => ({ path: `/api/v1/posts/${session.postIds[nextPost++ % session.postIds.length] ?? 1}` }),
    },
    {
      id: 'create',
      name: 'POST /posts (create)',
      status: 201,
      signedIn: true,
      request: (c) => ({
        path: '/api/v1/posts',
        init: jsonPost({ title: 'From afar', body: 'Written through the latency model.' }, bearer(c)),
      }),
    },
    {
      id: 'login',
      name: 'POST /auth/token (login, PBKDF2)',
      status: 200,
      request: () => ({ path: '/api/v1/auth/token', init: jsonPost(session.credentials) }),
    },
    {
      id: 'refresh',
      name: 'POST /auth/token/refresh',
      status: 200,
      request: (c) => ({ path: '/api/v1/auth/token/refresh', init: jsonPost({ refresh_token: c.refresh }) }),
      onBody: (c, body) => {
        const next = JSON.parse(body) as TokenPair
        c.refresh = next.refresh_token
        c.access = next.access_token
      },
    },
  ]
}

// ---- measuring ----------------------------------------------------------------------------------

const REVOCATION_WAIT_MS = 10_000

/**
 * A fresh session, logged out at another location (its marker stays in that location's cache), and
 * kept in `session.revokedAccess` once the shared filter has it: the RevocationPublisher writes it
 * within a second (docs/design.md § Revocation), and the local KV has no propagation delay.
 */
async function revokeElsewhere(session: Session): Promise<void> {
  const pair = await login(session.base, session.credentials)
  const headers = { authorization: `Bearer ${pair.access_token}`, [LOCATION_HEADER]: 'elsewhere' }
  const logout = await fetch(`${session.base}/api/v1/auth/logout`, { method: 'POST', headers })
  if (logout.status !== 204) throw new Error(`logout for me-revoked: ${logout.status} ${await logout.text()}`)
  const deadline = Date.now() + REVOCATION_WAIT_MS
  for (;;) {
    const probe = await fetch(`${session.base}/api/v1/users/me`, {
      headers: { authorization: `Bearer ${pair.access_token}` },
    })
    await probe.body?.cancel()
    if (probe.status === 401) break
    if (Date.now() > deadline) throw new Error('me-revoked: the revocation never reached the shared filter')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  session.revokedAccess = pair.access_token
}

/** A fresh access token before each signed-in run (ACCESS_TOKEN_TTL is 300 s); zero waits. */
async function refreshTokens(session: Session): Promise<void> {
  const { client } = session
  const response = await fetch(`${session.base}/api/v1/auth/token/refresh`, jsonPost({ refresh_token: client.refresh }))
  const next = await expectJson<TokenPair>(response, 'refresh')
  client.access = next.access_token
  client.refresh = next.refresh_token
}

interface Sample {
  ms: number
  calls: string
  serverTiming: string
  edgeCache: string
}

/** One request with the region's waits (or none), timed from send to the last byte. */
async function once(session: Session, scenario: Scenario, region: string | undefined): Promise<Sample> {
  const { client } = session
  const { path, init = {} } = scenario.request(client)
  const headers = new Headers(init.headers)
  if (region !== undefined) headers.set(REGION_HEADER, region)
  if (scenario.kv !== undefined) headers.set(KV_HEADER, scenario.kv)
  if (client.bookmark !== undefined) headers.set('x-d1-bookmark', client.bookmark)
  const started = performance.now()
  const response = await fetch(`${session.base}${path}`, { ...init, headers })
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

/** SAMPLES sequential requests of a scenario in a region (undefined: the zero-wait baseline). */
async function measure(session: Session, scenario: Scenario, region: string | undefined): Promise<Measured> {
  if (scenario.signedIn === true) await refreshTokens(session)
  await scenario.before?.(session)
  if (scenario.warm === true) await once(session, scenario, undefined)
  const runs: Sample[] = []
  for (let i = 0; i < SAMPLES; i += 1) runs.push(await once(session, scenario, region))
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

/** Warms the isolate (JIT, config, keys) with zero waits; nothing here is recorded. */
async function warmUp(session: Session, selected: Scenario[]): Promise<void> {
  for (const scenario of selected)
    for (let i = 0; i < 3; i += 1) {
      if (scenario.signedIn === true) await refreshTokens(session)
      await scenario.before?.(session)
      if (scenario.warm === true) await once(session, scenario, undefined)
      await once(session, scenario, undefined)
    }
}

interface Measurements {
  baseline: Map<string, Measured>
  edge: Map<string, Map<string, Measured>>
}

/** The local baseline of every scenario, then every scenario in every region. */
async function measureAll(session: Session, selected: Scenario[]): Promise<Measurements> {
  log(
    `${selected.length} endpoints × (${REGIONS.length} regions + the local baseline) × ${SAMPLES} sequential requests`,
  )
  const baseline = new Map<string, Measured>()
  for (const scenario of selected) {
    const m = await measure(session, scenario, undefined)
    baseline.set(scenario.name, m)
    log(`local (all waits zero)  ${scenario.name}: p50 ${m.p50Ms.toFixed(1)} ms`)
  }
  const edge = new Map<string, Map<string, Measured>>()
  for (const region of REGIONS) {
    const byScenario = new Map<string, Measured>()
    edge.set(region, byScenario)
    for (const scenario of selected) {
      const m = await measure(session, scenario, region)
      byScenario.set(scenario.name, m)
      log(`${region.padEnd(10)} ${scenario.name}: p50 ${m.p50Ms.toFixed(1)} ms at the worker (${m.calls})`)
    }
  }
  return { baseline, edge }
}

// ---- the model applied: add the client's round trips ---------------------------------------------

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

interface Row {
  name: string
  localSamplesMs: number[]
  cells: Cell[]
}

function cellOf(region: string, m: Measured, local: Measured): Cell {
  const assumptions = rtt.regions[region]!
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
}

function rowsOf(selected: Scenario[], { baseline, edge }: Measurements): Row[] {
  return selected.map((scenario) => {
    const local = baseline.get(scenario.name)!
    const cells = REGIONS.map((region) => cellOf(region, edge.get(region)!.get(scenario.name)!, local))
    return { name: scenario.name, localSamplesMs: local.samples, cells }
  })
}

// ---- report -------------------------------------------------------------------------------------

interface GeoTarget {
  name: string
  scenario: string
  max: number
  ratio: number | null
  pass: boolean | null
  note: string
}

const SYDNEY_TARGETS = [
  { name: 'signed-in GET /users/me', scenario: 'GET /users/me (signed in)', max: 0.33 },
  // The shared filter is hot wherever the API serves signed-in users; the session's key is not read.
  { name: 'idle session, first request', scenario: 'GET /users/me (idle session, first request)', max: 0.33 },
  {
    name: 'anonymous post list from the edge cache',
    scenario: 'GET /posts?limit=20 (anonymous, edge cache)',
    max: 0.1,
  },
  { name: 'write: POST /posts', scenario: 'POST /posts (create)', max: 1.1 },
  // One trip to the primary: the account is read at the replica (docs/design.md § Login).
  { name: 'login: POST /auth/token', scenario: 'POST /auth/token (login, PBKDF2)', max: 1.1 },
]

/** For a client↔PoP RTT a, ratio(a) = (a + e) / (a + o): where it crosses the target. */
function breakEvenNote(cell: Cell, max: number): string {
  const e = cell.edgeLocalP50Ms
  const o = cell.clientToOriginMs - cell.clientToPopMs + cell.originLocalP50Ms
  if (max === 1) return ''
  const breakEven = (max * o - e) / (1 - max)
  if (max < 1)
    return breakEven < 0 ? 'fails for any client↔PoP RTT' : `holds while client↔PoP RTT ≤ ${breakEven.toFixed(0)} ms`
  return breakEven <= 0 ? 'holds for any client↔PoP RTT' : `holds only for client↔PoP RTT ≥ ${breakEven.toFixed(0)} ms`
}

function sydneyTargets(rows: Row[]): GeoTarget[] {
  return SYDNEY_TARGETS.map((target) => {
    const cell = rows.find((r) => r.name === target.scenario)?.cells.find((c) => c.region === 'sydney')
    if (cell === undefined)
      return { ...target, ratio: null, pass: null, note: 'not measured (needs sydney and this endpoint)' }
    return { ...target, ratio: cell.ratio, pass: cell.ratio <= target.max, note: breakEvenNote(cell, target.max) }
  })
}

function printGeoReport(rows: Row[], targets: GeoTarget[]): void {
  printTable(
    ['p50 ms: edge / single origin (ratio)', ...REGIONS.map((r) => rtt.regions[r]?.label ?? r)],
    rows.map((row) => [
      row.name,
      ...row.cells.map((c) => `${c.edgeP50Ms.toFixed(0)} / ${c.originP50Ms.toFixed(0)} (${c.ratio.toFixed(2)})`),
    ]),
  )
  const shown = REGIONS.includes('sydney') ? 'sydney' : REGIONS[REGIONS.length - 1]!
  console.log(`modelled calls of a typical request in ${rtt.regions[shown]?.label ?? shown} (x-bench-geo):`)
  for (const row of rows) console.log(`  ${row.name}: ${row.cells.find((c) => c.region === shown)?.calls ?? ''}`)
  console.log('')
  for (const t of targets) {
    const verdict = t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'FAIL'
    console.log(
      `${verdict}  Sydney, ${t.name}: ${t.ratio === null ? '–' : t.ratio.toFixed(2)} of single origin (target ≤ ${t.max}; ${t.note}; assumed ${rtt.regions.sydney?.clientToPopMs ?? '?'} ms)`,
    )
  }
  console.log(
    '\nnotes: a model, not a measurement: round trips from scripts/bench/geo-rtt.json are slept in the worker; local D1/KV/cache and CPU time ' +
      '(PBKDF2 included) are measured on this machine, and the same for both columns. Single origin = client↔PoP + PoP↔Virginia + the local ' +
      'time of the same request with every wait zero. KV reads are hot except the session\'s own key in the "idle session" and "revoked" rows and every read in the "every KV read cold" row.',
  )
}

// ---- main ---------------------------------------------------------------------------------------

/** Which code is measured: the commit, and the files of src/ and migrations/ changed on top of it. */
function measuredCode(): { commit: string; uncommitted: string[] } {
  const git = (...args: string[]): string => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout.trim()
  return {
    commit: git('rev-parse', 'HEAD'),
    uncommitted: git('status', '--porcelain', '--', 'src', 'migrations').split('\n').filter(Boolean),
  }
}

/** One user, POSTS posts, and a signed-in client. */
async function openSession(served: ServedWorker): Promise<Session> {
  const { credentials, userId } = await registerUser(served.base, served.db, 'geo')
  await insertPosts(served.db, userId, POSTS)
  const posts = await served.db.prepare('SELECT id FROM posts ORDER BY id').all<{ id: number }>()
  const postIds = posts.results.map((r) => r.id)
  log(`seeded 1 user and ${postIds.length} posts`)
  const pair = await login(served.base, credentials)
  const client: Client = { access: pair.access_token, refresh: pair.refresh_token, bookmark: undefined }
  return { base: served.base, client, credentials, postIds, revokedAccess: '' }
}

async function benchGeo(workDir: string): Promise<void> {
  const code = measuredCode()
  const changed =
    code.uncommitted.length > 0 ? ` + ${code.uncommitted.length} uncommitted files in src/ and migrations/` : ''
  log(`measuring ${code.commit.slice(0, 7)}${changed}`)
  const served = await serveWorker({
    workDir,
    entry: 'scripts/bench/geo-worker.ts',
    vars: { BENCH_GEO_MODEL: JSON.stringify(model) },
  })
  try {
    const session = await openSession(served)
    const all = scenarios(session)
    const only = commaList(flags.only)
    const selected = only === undefined ? all : all.filter((s) => only.includes(s.id))
    if (selected.length === 0) throw new Error(`--only matched nothing; ids: ${all.map((s) => s.id).join(', ')}`)
    await warmUp(session, selected)
    const rows = rowsOf(selected, await measureAll(session, selected))
    const targets = sydneyTargets(rows)
    printGeoReport(rows, targets)
    const date = new Date().toISOString()
    const options = { samples: SAMPLES, posts: session.postIds.length, regions: REGIONS }
    writeResults('geo-', date, { date, code, options, assumptions: rtt, waits: model, rows, targets })
  } finally {
    await served.dispose()
  }
}

async function main(): Promise<void> {
  const load = loadavg()[0] ?? 0
  if (load > 1)
    log(
      `warning: load average ${load.toFixed(2)}: other work shares the CPUs, so the local part of each latency will be noisy`,
    )
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-bench-geo-'))
  try {
    await benchGeo(workDir)
  } finally {
    rmSync(workDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error('bench:geo: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
