// `npm run capacity`: how many rows fit in one D1 database, and the write rate one local D1
// primary sustains through the Worker. The figures and how to read them: docs/design.md § Capacity.
//
// 1. Applies migrations/ to a throwaway local D1 (`wrangler d1 migrations apply DB --local
//    --persist-to <tmpdir>`) and builds the deploy bundle (`wrangler deploy --dry-run --minify`).
// 2. Serves that bundle with the Miniflare API over the same persisted D1 (as scripts/bench/bench.ts does,
//    without the `wrangler dev` proxy).
// 3. Per table, in order users, posts, subscribers, sessions, one_time_tokens, email_outbox: inserts
//    N realistic rows, reads the database size, inserts N more and reads it again. Bytes per row =
//    the size difference of the second N ÷ N, so the schema and the first pages of every b-tree
//    do not count. Posts are counted with their FTS5 index (filled by the triggers of
//    migrations/0002) and both keyset indexes; every table with all of its indexes.
// 4. Registers a user through the API, logs in, and creates posts with POST /api/v1/posts: one at
//    a time, then from C concurrent clients; the Worker's Server-Timing header says how long each
//    request waited on D1.
// 5. Prints the tables for docs/design.md § Capacity; if a sqlite3 shell is installed, compares the
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
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import type { Readable } from 'node:stream'
import { Miniflare } from 'miniflare'
import { literal } from '../d1'
import { runWrangler } from '../wrangler'
import { buildBundle, expectJson, log, readWranglerToml } from './serve'

// ---- options --------------------------------------------------------------------------------

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

function positiveNumber(name: string, raw: string | undefined, fallback: number, integer = true): number {
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!(value > 0) || (integer && !Number.isInteger(value))) {
    console.error(`capacity: ${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return value
}

const POSTS = positiveNumber('--posts', flags.posts, 20_000)
const ROWS = positiveNumber('--rows', flags.rows, 50_000)
const SEQUENTIAL_WRITES = positiveNumber('--writes', flags.writes, 1_000)
const CONCURRENT_WRITES = positiveNumber('--concurrent', flags.concurrent, 3_000)
const CONNECTIONS = positiveNumber('--connections', flags.connections, 10)
const LIMIT_BYTES = positiveNumber('--limit-gb', flags['limit-gb'], 10, false) * 1e9
/** Huge limits for the rate-limit bindings: the measurement is of D1 and the API, not the limiter. */
const RATE_LIMIT = 1_000_000_000
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

// ---- deterministic, realistic data -----------------------------------------------------------

/** mulberry32: the same rows on every run, so runs compare. */
function prng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const random = prng(20_261_130)
const between = (low: number, high: number): number => low + Math.floor(random() * (high - low + 1))
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
const chance = (p: number): boolean => random() < p

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const base64url = (length: number): string =>
  Array.from({ length }, () => BASE64URL[Math.floor(random() * 64)]).join('')
const hex = (length: number): string =>
  Array.from({ length }, () => '0123456789abcdef'[Math.floor(random() * 16)]).join('')
/** A random (version 4) UUID, as crypto.randomUUID() writes sids and jtis. */
const uuid = (): string => `${hex(8)}-${hex(4)}-4${hex(3)}-${'89ab'[between(0, 3)]}${hex(3)}-${hex(12)}`
/** The stored password format: pbkdf2-sha256$100000$<16-byte salt>$<32-byte hash>, base64url. */
const passwordHash = (): string => `pbkdf2-sha256$100000$${base64url(22)}$${base64url(43)}`
/** A SHA-256 in base64url, as one-time token and unsubscribe token hashes are stored. */
const sha256 = (): string => base64url(43)

const FIRST = [
  'maria',
  'james',
  'aiko',
  'lucas',
  'fatima',
  'noah',
  'elena',
  'omar',
  'sofia',
  'liam',
  'chen',
  'amara',
  'mateo',
  'ingrid',
  'ravi',
  'zoe',
  'pierre',
  'hana',
  'diego',
  'olga',
  'kwame',
  'lena',
  'yusuf',
  'clara',
  'tomas',
  'mei',
  'arjun',
  'nora',
]
const LAST = [
  'garcia',
  'smith',
  'tanaka',
  'silva',
  'khan',
  'johnson',
  'rossi',
  'haddad',
  'novak',
  'murphy',
  'wang',
  'okafor',
  'lopez',
  'larsen',
  'patel',
  'martin',
  'dubois',
  'kim',
  'fernandez',
  'ivanova',
  'mensah',
  'schmidt',
  'demir',
  'moreau',
]
const DOMAINS = [
  'example.com',
  'mail.example.org',
  'example.net',
  'post.example.co.uk',
  'inbox.example.de',
  'example.io',
]
const capitalise = (word: string): string => word.charAt(0).toUpperCase() + word.slice(1)

/** English function words first, then 20 000 synthetic words: a Zipf-distributed vocabulary for FTS5. */
const COMMON = (
  'the of and to a in is it you that he was for on are with as his they be at one have this from or had by hot word but ' +
  'what some we can out other were all there when up use your how said an each she which do their time if will way about ' +
  'many then them write would like so these her long make thing see him two has look more day could go come did number ' +
  'sound no most people my over know water than call first who may down side been now find any new work part take get ' +
  'place made live where after back little only round man year came show every good me give our under name very through ' +
  'just form sentence great think say help low line differ turn cause much mean before move right boy old too same tell ' +
  'edge worker database query cache token session search index post user request response latency deploy replica'
).split(' ')
const SYLLABLES = [
  'ka',
  'lo',
  'mi',
  'ne',
  'ro',
  'sa',
  'ti',
  'vu',
  'ber',
  'con',
  'dex',
  'fin',
  'gra',
  'hol',
  'ist',
  'jun',
  'lex',
  'mor',
  'nal',
  'pre',
  'quo',
  'ral',
  'ster',
  'tor',
  'und',
  'ver',
  'wick',
  'al',
  'en',
  'or',
  'tion',
  'ment',
  'ly',
  'ing',
]
const VOCABULARY = [
  ...new Set([
    ...COMMON,
    ...Array.from({ length: 26_000 }, () => Array.from({ length: between(2, 4) }, () => pick(SYLLABLES)).join('')),
  ]),
].slice(0, COMMON.length + 20_000)
const ZIPF_CDF = (() => {
  const weights = VOCABULARY.map((_, rank) => 1 / (rank + 1))
  const total = weights.reduce((sum, w) => sum + w, 0)
  let running = 0
  return weights.map((w) => (running += w / total))
})()
function word(): string {
  const r = random()
  let low = 0
  let high = ZIPF_CDF.length - 1
  while (low < high) {
    const mid = (low + high) >> 1
    if ((ZIPF_CDF[mid] ?? 1) < r) low = mid + 1
    else high = mid
  }
  return VOCABULARY[low] ?? 'edge'
}

/** About 60 characters. */
function title(): string {
  const words = [capitalise(word())]
  while (words.join(' ').length < 58) words.push(word())
  return words.join(' ').slice(0, 60).trimEnd()
}

/** 1–2 KB of prose: sentences of 6–22 words, paragraphs of 3–6 sentences. */
function body(): string {
  const target = between(1024, 2048)
  const paragraphs: string[] = []
  let length = 0
  while (length < target) {
    const sentences = Array.from({ length: between(3, 6) }, () => {
      const words = Array.from({ length: between(6, 22) }, word)
      return `${capitalise(words.join(' '))}${pick(['.', '.', '.', '?', '!'])}`
    })
    const paragraph = sentences.join(' ')
    paragraphs.push(paragraph)
    length += paragraph.length + 2
  }
  return paragraphs.join('\n\n').slice(0, target).trimEnd()
}

// ---- the tables ------------------------------------------------------------------------------

type Value = string | number | null

interface TableLoad {
  table: string
  /** What one row is, for the report. */
  what: string
  rows: number
  columns: string[]
  row: (index: number) => Value[]
}

const DAY = 86_400_000
const epoch = Date.UTC(2024, 0, 1)
let userCount = 0
let subscriberCount = 0

function tables(): TableLoad[] {
  const person = (n: number) => ({ first: pick(FIRST), last: pick(LAST), n })
  return [
    {
      table: 'users',
      what: 'user (username, email, PBKDF2 hash, username key; 4 unique/keyset indexes)',
      rows: ROWS,
      columns: [
        'username',
        'username_key',
        'email',
        'email_verified',
        'is_admin',
        'password_hash',
        'created_at',
        'updated_at',
        'last_login_at',
      ],
      row: (i) => {
        const p = person(i)
        const username = `${capitalise(p.first)}${capitalise(p.last)}${p.n}`
        const createdAt = epoch + i * 60_000
        userCount = Math.max(userCount, i + 1)
        return [
          username,
          username.toLowerCase(),
          `${p.first}.${p.last}.${p.n}@${pick(DOMAINS)}`,
          chance(0.85) ? 1 : 0,
          0,
          passwordHash(),
          createdAt,
          createdAt + between(0, 30) * DAY,
          chance(0.7) ? createdAt + between(1, 60) * DAY : null,
        ]
      },
    },
    {
      table: 'posts',
      what: 'post (60-char title, 1–2 KB body) with its FTS5 index and 2 keyset indexes',
      rows: POSTS,
      columns: ['author_id', 'title', 'body', 'created_at', 'updated_at'],
      row: (i) => {
        const createdAt = epoch + i * 120_000
        return [
          between(1, userCount),
          title(),
          body(),
          createdAt,
          chance(0.2) ? createdAt + between(1, 10) * DAY : createdAt,
        ]
      },
    },
    {
      table: 'subscribers',
      what: 'subscriber (email, name, status, unsubscribe token hash; 4 indexes)',
      rows: ROWS,
      columns: [
        'email',
        'name',
        'status',
        'created_at',
        'updated_at',
        'confirmed_at',
        'unsubscribed_at',
        'unsubscribe_token_hash',
      ],
      row: (i) => {
        const p = person(i)
        const createdAt = epoch + i * 60_000
        const status = pick([
          'active',
          'active',
          'active',
          'active',
          'active',
          'active',
          'active',
          'pending',
          'pending',
          'unsubscribed',
        ])
        subscriberCount = Math.max(subscriberCount, i + 1)
        return [
          `${p.first}${p.n}.${p.last}@${pick(DOMAINS)}`,
          chance(0.6) ? `${capitalise(p.first)} ${capitalise(p.last)}` : null,
          status,
          createdAt,
          createdAt + DAY,
          status === 'pending' ? null : createdAt + 3_600_000,
          status === 'unsubscribed' ? createdAt + 30 * DAY : null,
          sha256(),
        ]
      },
    },
    {
      table: 'sessions',
      what: 'login session (uuid sid, current and previous jti; 2 indexes)',
      rows: ROWS,
      columns: [
        'sid',
        'user_id',
        'current_jti',
        'previous_jti',
        'refresh_issued_at',
        'refresh_expires_at',
        'created_at',
        'rotated_at',
        'revoked_at',
      ],
      row: (i) => {
        const createdAt = epoch + i * 30_000
        const rotated = chance(0.7)
        const issuedAt = rotated ? createdAt + between(1, 20) * DAY : createdAt
        return [
          uuid(),
          between(1, userCount),
          uuid(),
          rotated ? uuid() : null,
          issuedAt,
          issuedAt + DAY,
          createdAt,
          rotated ? issuedAt : null,
          chance(0.1) ? issuedAt + 3_600_000 : null,
        ]
      },
    },
    {
      table: 'one_time_tokens',
      what: 'one-time token (SHA-256, purpose, recipient; 4 indexes)',
      rows: ROWS,
      columns: ['token_hash', 'purpose', 'user_id', 'subscriber_id', 'email', 'created_at', 'expires_at', 'used_at'],
      row: (i) => {
        const p = person(i)
        const purpose = pick([
          'email_verification',
          'email_verification',
          'password_reset',
          'subscription_confirmation',
        ])
        const createdAt = epoch + i * 30_000
        const forUser = purpose !== 'subscription_confirmation'
        return [
          sha256(),
          purpose,
          forUser ? between(1, userCount) : null,
          forUser ? null : between(1, subscriberCount),
          `${p.first}.${p.last}.${p.n}@${pick(DOMAINS)}`,
          createdAt,
          createdAt + (purpose === 'password_reset' ? 3_600_000 : DAY),
          chance(0.6) ? createdAt + 600_000 : null,
        ]
      },
    },
    {
      table: 'email_outbox',
      what: 'queued email (recipient, subject, ~400-byte text with a link, headers; 1 index)',
      rows: ROWS,
      columns: [
        'recipient',
        'subject',
        'text',
        'headers',
        'status',
        'attempts',
        'next_attempt_at',
        'last_error',
        'created_at',
        'sent_at',
      ],
      row: (i) => {
        const p = person(i)
        const createdAt = epoch + i * 30_000
        const base = 'https://blog.example.com'
        const subscription = chance(0.5)
        const link = `${base}/${subscription ? 'confirm-subscription' : 'verify-email'}?token=${base64url(43)}`
        const unsubscribe = `${base}/unsubscribe?token=${base64url(43)}`
        const text = subscription
          ? `Hello ${capitalise(p.first)},\n\nPlease confirm your subscription to the edgepress mailing list:\n${link}\n\nIf you did not ask to subscribe, ignore this email and you will hear nothing more.\nTo unsubscribe at any time: ${unsubscribe}`
          : `Hello ${capitalise(p.first)}${capitalise(p.last)}${p.n},\n\nPlease confirm that this is your email address by opening this link:\n${link}\n\nThe link is valid for 24 hours. If you did not create an edgepress account, ignore this email.`
        const sent = chance(0.97)
        return [
          `${p.first}.${p.last}.${p.n}@${pick(DOMAINS)}`,
          subscription ? 'Confirm your subscription to edgepress' : 'Confirm your email address for edgepress',
          text,
          subscription ? JSON.stringify({ 'List-Unsubscribe': `<${unsubscribe}>` }) : '{}',
          sent ? 'sent' : 'pending',
          sent ? 1 : 0,
          createdAt,
          null,
          createdAt,
          sent ? createdAt + 2_000 : null,
        ]
      },
    },
  ]
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

async function main(): Promise<void> {
  const config = readWranglerToml()
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-capacity-'))
  const persistDir = join(workDir, 'd1')
  let mf: Miniflare | undefined
  try {
    log(`applying migrations/ to a throwaway local D1 (--persist-to ${persistDir})`)
    runWrangler(['d1', 'migrations', 'apply', 'DB', '--local', '--persist-to', persistDir])
    log('building the bundle (wrangler deploy --dry-run --minify)')
    const scriptPath = buildBundle(join(workDir, 'dist'))

    mf = new Miniflare({
      scriptPath,
      modules: true,
      modulesRoot: dirname(scriptPath),
      compatibilityDate: config.compatibilityDate,
      compatibilityFlags: config.compatibilityFlags,
      host: '127.0.0.1',
      port: 0,
      // The database wrangler just migrated: wrangler keeps local D1 under <persist-to>/v3/d1, keyed by the database id.
      d1Databases: { DB: config.databaseId },
      d1Persist: join(persistDir, 'v3', 'd1'),
      kvNamespaces: ['REVOKED_TOKENS'],
      ratelimits: Object.fromEntries(
        config.rateLimits.map((name) => [name, { simple: { limit: RATE_LIMIT, period: 60 as const } }]),
      ),
      bindings: {
        ...config.vars,
        JWT_SECRET: randomBytes(48).toString('base64url'),
        LOG_REQUESTS: 'false',
        MAIL_TRANSPORT: 'console',
      },
      logRequests: false,
      handleRuntimeStdio: (stdout: Readable, stderr: Readable) => {
        stdout.resume()
        stderr.pipe(process.stderr)
      },
    })
    const base = (await mf.ready).toString().replace(/\/$/, '')
    const db = await mf.getD1Database('DB')
    const migrated = await db
      .prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'posts_fts'")
      .first<{ n: number }>()
    if (migrated?.n !== 1)
      throw new Error('the persisted D1 has no posts_fts: Miniflare did not open the database wrangler migrated')
    const emptySize = await databaseSize(db)
    log(`serving the bundle with Miniflare at ${base}; the migrated, empty database is ${mb(emptySize)}`)

    // ---- bytes per row ----
    const results: TableResult[] = []
    let ftsBytesPerPost = Number.NaN
    for (const load of tables()) {
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
    const seededSize = await databaseSize(db)

    // ---- write rate through the Worker ----
    const credentials = { username: 'capacity', password: `capacity-${randomBytes(9).toString('base64url')}` }
    const post = (path: string, payload: unknown): Promise<Response> =>
      fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      })
    await expectJson(
      await post('/api/v1/auth/register', { ...credentials, email: 'capacity@example.com' }),
      'register',
      201,
    )
    const { access_token: token } = await expectJson<{ access_token: string }>(
      await post('/api/v1/auth/token', credentials),
      'login',
      200,
    )
    const writes = [
      await measureWrites(base, 'POST /api/v1/posts, one at a time', SEQUENTIAL_WRITES, 1, token),
      await measureWrites(
        base,
        `POST /api/v1/posts, ${CONNECTIONS} concurrent clients`,
        CONCURRENT_WRITES,
        CONNECTIONS,
        token,
      ),
    ]
    const finalSize = await databaseSize(db)
    await mf.dispose()
    mf = undefined
    const file = sqliteFile(persistDir)
    const vacuumed = file === undefined ? undefined : vacuumedSize(file, workDir)

    // ---- report ----
    const perRow = (table: string): number => results.find((r) => r.table === table)?.bytesPerRow ?? Number.NaN
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

    // A mixed workload per registered user: 10 posts, 20 newsletter subscribers, 2 live sessions,
    // 0.2 unexpired one-time tokens, and one sent email per user and per subscriber (the outbox
    // keeps sent mail: nothing prunes it).
    const mix = { users: 1, posts: 10, subscribers: 20, sessions: 2, one_time_tokens: 0.2, email_outbox: 21 }
    const perUser = Object.entries(mix).reduce((sum, [table, n]) => sum + n * perRow(table), 0)
    const users = LIMIT_BYTES / perUser
    const share = (table: keyof typeof mix): string =>
      `${(((mix[table] * perRow(table)) / perUser) * 100).toFixed(0)} %`
    console.log('')
    console.log(
      `Mixed workload, per user: ${Object.entries(mix)
        .map(([table, n]) => `${n} × ${table}`)
        .join(', ')} = ${grouped(perUser)} bytes ` +
        `(posts ${share('posts')}, outbox ${share('email_outbox')}, subscribers ${share('subscribers')}); ` +
        `one database holds ≈ ${roughly(users)} users with ≈ ${roughly(users * mix.posts)} posts and ≈ ${roughly(users * mix.subscribers)} subscribers.`,
    )
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
    console.log('')
    console.log(
      `Database: ${mb(emptySize)} migrated, ${mb(seededSize)} seeded, ${mb(finalSize)} after the writes (D1 size_after). ` +
        (file === undefined
          ? ''
          : `On disk after shutdown: ${mb(fileSize(file))} SQLite file + ${mb(fileSize(`${file}-wal`))} write-ahead log. `) +
        (vacuumed === undefined
          ? 'No sqlite3 shell found: no VACUUMed comparison.'
          : `A VACUUMed copy (sqlite3 shell) is ${mb(vacuumed)}: ${((1 - vacuumed / finalSize) * 100).toFixed(0)} % of the as-written size is free space in pages.`),
    )
    console.log(
      'Local D1 is SQLite in workerd on one host, not production D1: read the rates as relative costs (docs/design.md § Capacity).',
    )
  } finally {
    if (mf !== undefined) await mf.dispose()
    rmSync(workDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error('capacity: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
