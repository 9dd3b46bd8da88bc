// `npm run capacity`: how many rows fit in one D1 database, and the write rate one local D1
// primary sustains through the Worker. The figures and how to read them: docs/design.md § Capacity.
//
// 1. Builds the deploy bundle and serves it with the Miniflare API as every benchmark is served
//    (scripts/bench/serve.ts), over a throwaway D1 persisted in wrangler's `--persist-to` layout
//    and migrated as `wrangler d1 migrations apply --local` migrates it.
// 2. Per table, in order users, posts, subscribers, sessions, one_time_tokens, email_outbox: inserts
//    N realistic rows (scripts/bench/capacity-data.ts), reads the database size, inserts N more and
//    reads it again. Bytes per row = the size difference of the second N ÷ N, so the schema and
//    the first pages of every b-tree do not count. Posts are counted with their FTS5 index (filled
//    by the triggers of migrations/0002) and both keyset indexes; every table with all of its indexes.
// 3. Registers a user through the API, logs in, and creates posts with POST /api/v1/posts: one at
//    a time, then from C concurrent clients; the Worker's Server-Timing header says how long each
//    request waited on D1.
// 4. Prints the tables for docs/design.md § Capacity; if a sqlite3 shell is installed, compares the
//    size with a VACUUMed copy of the file.
//
// The size is D1's own figure, `meta.size_after` of a query (page count × page size of the SQLite
// file, which is what D1 counts against its size limit). D1 refuses VACUUM (every query runs in a
// transaction) and `PRAGMA page_count`, so the figures are "as written": b-trees filled by
// inserts in key order are packed, those filled in random key order (uuid, hash and email indexes)
// carry the free space a live database has too.
//
// Options:
//   --posts N        posts per half (default 20 000, so 40 000 in all)
//   --rows N         rows per half for every other table (default 50 000)
//   --writes K       posts created one at a time through the API (default 1 000)
//   --concurrent K   posts created by the concurrent clients (default 3 000)
//   --connections C  concurrent clients (default 10)
//   --limit-gb G     the database size limit assumed (default 10: D1 on Workers Paid)
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { literal } from '../d1'
import { body, tables, title } from './capacity-data'
import type { TableLoad } from './capacity-data'
import { login, registerUser } from './fixtures'
import { positiveNumber } from './flags'
import { expectJson, log, serveWorker } from './serve'
import type { ServedWorker } from './serve'

const { values: flags } = parseArgs({
  options: {
    posts: { type: 'string' },
    rows: { type: 'string' },
    writes: { type: 'string' },
    concurrent: { type: 'string' },
    connections: { type: 'string' },
    'limit-gb': { type: 'string' },
  },
})
const flag = (name: string, raw: string | undefined, fallback: number, integer = true): number =>
  positiveNumber('capacity', { name, raw, fallback, integer })
const POSTS = flag('--posts', flags.posts, 20_000)
const ROWS = flag('--rows', flags.rows, 50_000)
const SEQUENTIAL_WRITES = flag('--writes', flags.writes, 1_000)
const CONCURRENT_WRITES = flag('--concurrent', flags.concurrent, 3_000)
const CONNECTIONS = flag('--connections', flags.connections, 10)
const LIMIT_BYTES = flag('--limit-gb', flags['limit-gb'], 10, false) * 1e9
/** D1 refuses SQL statements over 100 KB; the seeding stays below with a margin. */
const MAX_STATEMENT_BYTES = 90_000

// ---- helpers --------------------------------------------------------------------------------

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`
const grouped = (n: number): string => Math.round(n).toLocaleString('en-US').replace(/,/g, ' ')
/** 41 200 000 → "41 million", 3 700 000 → "3.7 million", 870 000 → "870 000". */
function roughly(n: number): string {
  if (n >= 10e6) return `${grouped(Math.round(n / 1e6))} million`
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} million`
  return grouped(Math.round(n / 1e3) * 1e3)
}

// ---- measuring -------------------------------------------------------------------------------

interface TableResult {
  table: string
  what: string
  rows: number
  /** Bytes per row of the first and the second N (the second is the figure). */
  firstBytesPerRow: number
  bytesPerRow: number
  /** Average text bytes of a row as inserted, for posts the title and body. */
  payloadBytes: number
  rowsPerSecond: number
}

async function databaseSize(db: D1Database): Promise<number> {
  return (await db.prepare('SELECT 1').run()).meta.size_after
}

/**
 * Multi-row INSERTs with the values written as SQL literals, each statement under D1's 100 KB
 * statement limit, ten statements per batch. Bound parameters would allow only 100 values per
 * statement, and per-statement overhead would then dominate the seeding time.
 */
async function insertRows(
  db: D1Database,
  load: TableLoad,
  from: number,
  count: number,
): Promise<{ payload: number; seconds: number }> {
  const head = `INSERT INTO ${load.table} (${load.columns.join(', ')}) VALUES `
  let payload = 0
  let done = 0
  let pending: string | undefined
  const start = performance.now()
  while (done < count || pending !== undefined) {
    const batch: D1PreparedStatement[] = []
    while (batch.length < 10 && (done < count || pending !== undefined)) {
      const tuples: string[] = []
      let length = head.length
      while (done < count || pending !== undefined) {
        if (pending === undefined) {
          const values = load.row(from + done)
          for (const value of values) if (typeof value === 'string') payload += Buffer.byteLength(value)
          pending = `(${values.map(literal).join(', ')})`
          done += 1
        }
        const size = Buffer.byteLength(pending) + 2
        if (tuples.length > 0 && length + size > MAX_STATEMENT_BYTES) break
        tuples.push(pending)
        length += size
        pending = undefined
      }
      batch.push(db.prepare(head + tuples.join(', ')))
    }
    await db.batch(batch)
  }
  return { payload, seconds: (performance.now() - start) / 1000 }
}

async function measureTable(db: D1Database, load: TableLoad): Promise<TableResult> {
  const before = await databaseSize(db)
  await insertRows(db, load, 0, load.rows)
  const middle = await databaseSize(db)
  const second = await insertRows(db, load, load.rows, load.rows)
  const after = await databaseSize(db)
  const result: TableResult = {
    table: load.table,
    what: load.what,
    rows: load.rows,
    firstBytesPerRow: (middle - before) / load.rows,
    bytesPerRow: (after - middle) / load.rows,
    payloadBytes: second.payload / load.rows,
    rowsPerSecond: load.rows / second.seconds,
  }
  log(
    `${load.table}: 2 × ${grouped(load.rows)} rows, ${mb(before)} → ${mb(middle)} → ${mb(after)}; ` +
      `${result.bytesPerRow.toFixed(0)} B/row (first half ${result.firstBytesPerRow.toFixed(0)}), ` +
      `text ${result.payloadBytes.toFixed(0)} B/row; batched inserts ${grouped(result.rowsPerSecond)} rows/s`,
  )
  return result
}

interface WriteResult {
  name: string
  requests: number
  connections: number
  perSecond: number
  p50Ms: number
  p99Ms: number
  /** From the Worker's Server-Timing header: the time a request waited on D1, and its D1 calls. */
  d1MsPerPost: number
  d1CallsPerPost: number
}

/** The `d1` entry of a Server-Timing header (`d1;dur=1.2;desc="calls=1 start=…"`); NaN when absent. */
function d1Timing(header: string | null): { ms: number; calls: number } {
  const entry = (header ?? '')
    .split(',')
    .map((part) => part.trim())
    .find((part) => part.startsWith('d1;'))
  return {
    ms: Number(/;dur=([0-9.]+)/.exec(entry ?? '')?.[1] ?? Number.NaN),
    calls: Number(/calls=(\d+)/.exec(entry ?? '')?.[1] ?? Number.NaN),
  }
}

async function measureWrites(
  base: string,
  name: string,
  total: number,
  connections: number,
  token: string,
): Promise<WriteResult> {
  const latencies: number[] = []
  let d1Ms = 0
  let d1Calls = 0
  let next = 0
  const client = async (): Promise<void> => {
    while (next < total) {
      next += 1
      const payload = JSON.stringify({ title: title(), body: body() })
      const start = performance.now()
      const response = await fetch(`${base}/api/v1/posts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: payload,
      })
      await expectJson(response, 'POST /api/v1/posts', 201)
      latencies.push(performance.now() - start)
      const d1 = d1Timing(response.headers.get('server-timing'))
      d1Ms += d1.ms
      d1Calls += d1.calls
    }
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: connections }, client))
  const seconds = (performance.now() - start) / 1000
  latencies.sort((a, b) => a - b)
  const result: WriteResult = {
    name,
    requests: total,
    connections,
    perSecond: total / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    d1MsPerPost: d1Ms / total,
    d1CallsPerPost: d1Calls / total,
  }
  log(
    `${name}: ${grouped(total)} posts in ${seconds.toFixed(1)} s = ${result.perSecond.toFixed(0)} posts/s, ` +
      `p50 ${result.p50Ms.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms; ` +
      `D1 ${result.d1MsPerPost.toFixed(2)} ms in ${result.d1CallsPerPost.toFixed(1)} calls per post (Server-Timing)`,
  )
  return result
}

/** The SQLite file of the local D1 (wrangler's layout: <persist-to>/v3/d1/miniflare-D1DatabaseObject/<hash>.sqlite). */
function sqliteFile(persistDir: string): string | undefined {
  const dir = join(persistDir, 'v3', 'd1', 'miniflare-D1DatabaseObject')
  const name = readdirSync(dir).find((entry) => entry.endsWith('.sqlite') && entry !== 'metadata.sqlite')
  return name === undefined ? undefined : join(dir, name)
}

const fileSize = (path: string): number => {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}

/**
 * The size of a VACUUMed copy, with the sqlite3 command-line shell if one is installed (D1 itself
 * refuses VACUUM): how much of the as-written size is free space inside b-tree pages.
 */
function vacuumedSize(file: string, workDir: string): number | undefined {
  const copy = join(workDir, 'vacuumed.sqlite')
  const result = spawnSync('sqlite3', [file, `VACUUM INTO '${copy}'`], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  })
  if (result.error !== undefined || result.status !== 0) return undefined
  return fileSize(copy)
}

// ---- main ------------------------------------------------------------------------------------

interface Sizes {
  empty: number
  seeded: number
  final: number
}

/** Bytes per row of every table, and what the FTS5 index of a post weighs. */
async function measureTables(db: D1Database): Promise<{ results: TableResult[]; ftsBytesPerPost: number }> {
  const results: TableResult[] = []
  let ftsBytesPerPost = Number.NaN
  for (const load of tables({ posts: POSTS, rows: ROWS })) {
    results.push(await measureTable(db, load))
    if (load.table === 'posts') {
      // The FTS5 index's own blocks (its shadow table posts_fts_data), without page overhead.
      const fts = await db
        .prepare('SELECT sum(length(block)) AS bytes, (SELECT count(*) FROM posts) AS posts FROM posts_fts_data')
        .first<{ bytes: number; posts: number }>()
      if (fts !== null && fts.posts > 0) ftsBytesPerPost = fts.bytes / fts.posts
      log(`posts: the FTS5 index blocks hold ${ftsBytesPerPost.toFixed(0)} B per post`)
    }
  }
  return { results, ftsBytesPerPost }
}

/** Posts created through the API: one at a time, then from CONNECTIONS concurrent clients. */
async function measureWriteRates(served: ServedWorker): Promise<WriteResult[]> {
  const { credentials } = await registerUser(served.base, served.db, 'capacity')
  const { access_token: token } = await login(served.base, credentials)
  return [
    await measureWrites(served.base, 'POST /api/v1/posts, one at a time', SEQUENTIAL_WRITES, 1, token),
    await measureWrites(
      served.base,
      `POST /api/v1/posts, ${CONNECTIONS} concurrent clients`,
      CONCURRENT_WRITES,
      CONNECTIONS,
      token,
    ),
  ]
}

function printTableSizes(results: TableResult[], ftsBytesPerPost: number): void {
  console.log('')
  console.log(
    `Measured ${new Date().toISOString().slice(0, 10)}; limit assumed ${LIMIT_BYTES / 1e9} GB (${grouped(LIMIT_BYTES)} bytes) per database.`,
  )
  console.log('')
  console.log('| table | one row is | bytes per row | text per row | rows in one database |')
  console.log('|---|---|--:|--:|--:|')
  for (const r of results) {
    console.log(
      `| \`${r.table}\` | ${r.what} | ${grouped(r.bytesPerRow)} | ${grouped(r.payloadBytes)} | ≈ ${roughly(LIMIT_BYTES / r.bytesPerRow)} |`,
    )
  }
  console.log(`\nOf a post, the FTS5 index blocks (posts_fts_data) are ≈ ${grouped(ftsBytesPerPost)} bytes.`)
}

/**
 * A mixed workload per registered user: 10 posts, 20 newsletter subscribers, 2 live sessions,
 * 0.2 unexpired one-time tokens, and one sent email per user and per subscriber (the outbox keeps
 * sent mail: nothing prunes it).
 */
function printMixedWorkload(results: TableResult[]): void {
  const perRow = (table: string): number => results.find((r) => r.table === table)?.bytesPerRow ?? Number.NaN
  const mix = { users: 1, posts: 10, subscribers: 20, sessions: 2, one_time_tokens: 0.2, email_outbox: 21 }
  const perUser = Object.entries(mix).reduce((sum, [table, n]) => sum + n * perRow(table), 0)
  const users = LIMIT_BYTES / perUser
  const share = (table: keyof typeof mix): string => `${(((mix[table] * perRow(table)) / perUser) * 100).toFixed(0)} %`
  console.log('')
  console.log(
    `Mixed workload, per user: ${Object.entries(mix)
      .map(([table, n]) => `${n} × ${table}`)
      .join(', ')} = ${grouped(perUser)} bytes ` +
      `(posts ${share('posts')}, outbox ${share('email_outbox')}, subscribers ${share('subscribers')}); ` +
      `one database holds ≈ ${roughly(users)} users with ≈ ${roughly(users * mix.posts)} posts and ≈ ${roughly(users * mix.subscribers)} subscribers.`,
  )
}

function printWritePaths(writes: WriteResult[], results: TableResult[]): void {
  console.log('')
  console.log('| write path (one local D1 primary) | posts | posts/s | p50 ms | p99 ms | D1 ms per post |')
  console.log('|---|--:|--:|--:|--:|--:|')
  for (const w of writes) {
    console.log(
      `| ${w.name} | ${grouped(w.requests)} | ${w.perSecond.toFixed(0)} | ${w.p50Ms.toFixed(1)} | ${w.p99Ms.toFixed(1)} | ${w.d1MsPerPost.toFixed(2)} |`,
    )
  }
  const bulk = results.find((r) => r.table === 'posts')
  if (bulk !== undefined) {
    console.log(
      `| seeding: multi-row INSERTs of ≤ 90 KB straight into D1, 10 per batch | ${grouped(bulk.rows)} | ${bulk.rowsPerSecond.toFixed(0)} | | | |`,
    )
  }
  const serial = writes[0]
  if (serial !== undefined) {
    console.log(
      `\nOne at a time, the Worker waited ${serial.d1MsPerPost.toFixed(2)} ms on D1 per created post (${serial.d1CallsPerPost.toFixed(1)} D1 calls, Server-Timing): ` +
        `a database that runs its queries one at a time and spends that long per post tops out near ${grouped(1000 / serial.d1MsPerPost)} posts/s.`,
    )
  }
}

/** The sizes D1 reported, the file on disk after shutdown, and a VACUUMed copy if sqlite3 is installed. */
function printDatabaseSizes(sizes: Sizes, persistDir: string, workDir: string): void {
  const file = sqliteFile(persistDir)
  const vacuumed = file === undefined ? undefined : vacuumedSize(file, workDir)
  console.log('')
  console.log(
    `Database: ${mb(sizes.empty)} migrated, ${mb(sizes.seeded)} seeded, ${mb(sizes.final)} after the writes (D1 size_after). ` +
      (file === undefined
        ? ''
        : `On disk after shutdown: ${mb(fileSize(file))} SQLite file + ${mb(fileSize(`${file}-wal`))} write-ahead log. `) +
      (vacuumed === undefined
        ? 'No sqlite3 shell found: no VACUUMed comparison.'
        : `A VACUUMed copy (sqlite3 shell) is ${mb(vacuumed)}: ${((1 - vacuumed / sizes.final) * 100).toFixed(0)} % of the as-written size is free space in pages.`),
  )
  console.log(
    'Local D1 is SQLite in workerd on one host, not production D1: read the rates as relative costs (docs/design.md § Capacity).',
  )
}

async function capacity(workDir: string): Promise<void> {
  const persistDir = join(workDir, 'd1')
  const served = await serveWorker({ workDir, persistTo: persistDir })
  let measured: { tables: Awaited<ReturnType<typeof measureTables>>; writes: WriteResult[]; sizes: Sizes }
  try {
    const empty = await databaseSize(served.db)
    log(`the migrated, empty database is ${mb(empty)}`)
    const tableSizes = await measureTables(served.db)
    const seeded = await databaseSize(served.db)
    const writes = await measureWriteRates(served)
    measured = { tables: tableSizes, writes, sizes: { empty, seeded, final: await databaseSize(served.db) } }
  } finally {
    // Shut down first: the SQLite file and its write-ahead log are measured as they are after shutdown.
    await served.dispose()
  }
  printTableSizes(measured.tables.results, measured.tables.ftsBytesPerPost)
  printMixedWorkload(measured.tables.results)
  printWritePaths(measured.writes, measured.tables.results)
  printDatabaseSizes(measured.sizes, persistDir, workDir)
}

async function main(): Promise<void> {
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-capacity-'))
  try {
    await capacity(workDir)
  } finally {
    rmSync(workDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error('capacity: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
