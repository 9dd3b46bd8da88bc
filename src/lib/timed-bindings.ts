import { classifyD1Failure, classifyKvFailure } from './outages'

// Wraps the bindings of one request so that what it spends on each is added up for the
// Server-Timing header and the request log: the time waited, the number of calls, and the depth,
// the number of sequential waves of remote I/O (D1 and KV, which can be far away; calls that
// overlap in time count once). Only I/O is timed: in Workers the clock does not advance while
// JavaScript runs, so these numbers are time spent waiting.

/** Where a request's D1 session started (`none`: it opened none). */
export type D1Start = 'primary' | 'any' | 'bookmark' | 'none'

export interface BindingTimings {
  d1Ms: number
  kvMs: number
  cacheMs: number
  rateLimitMs: number
  d1Calls: number
  kvCalls: number
  cacheCalls: number
  rateLimitCalls: number
  /** Sequential waves of D1 and KV calls. */
  depth: number
  /** D1 and KV calls under way: a call that starts while another is in flight joins its wave. */
  inFlight: number
  d1Start: D1Start
}

export function newTimings(): BindingTimings {
  return {
    d1Ms: 0,
    kvMs: 0,
    cacheMs: 0,
    rateLimitMs: 0,
    d1Calls: 0,
    kvCalls: 0,
    cacheCalls: 0,
    rateLimitCalls: 0,
    depth: 0,
    inFlight: 0,
    d1Start: 'none',
  }
}

/**
 * Holds writes back until `ready` settles: a signed-in request reads D1 while its revocation check
 * is still on its way, but writes nothing (to D1 or KV) before that check has answered.
 */
export interface WriteGate {
  ready: Promise<unknown>
}

type Clock = () => number
type Kind = 'd1' | 'kv' | 'cache' | 'rateLimit'

const STATEMENT_RUNNERS = new Set(['all', 'run', 'first', 'raw'])
const KV_METHODS = new Set(['get', 'getWithMetadata', 'put', 'delete', 'list'])
const KV_WRITES = new Set(['put', 'delete'])
// An allow-list: only a plain SELECT reads without writing; anything else (INSERT, UPDATE, DELETE,
// REPLACE, a WITH … that may write, PRAGMA) waits for the write gate.
const READING_SQL = /^\s*select\b/i

/** Runs one call of `kind`, recording its wait, its count and, for D1 and KV, its wave. */
async function timed<T>(timings: BindingTimings, kind: Kind, call: () => Promise<T>, clock: Clock): Promise<T> {
  const remote = kind === 'd1' || kind === 'kv'
  timings[`${kind}Calls`] += 1
  if (remote) {
    if (timings.inFlight === 0) timings.depth += 1
    timings.inFlight += 1
  }
  const started = clock()
  try {
    return await call()
  } catch (err) {
    // An outage of D1 or KV (not a bad statement) becomes a DependencyUnavailable: 503, not 500.
    if (kind === 'd1') throw classifyD1Failure(err)
    if (kind === 'kv') throw classifyKvFailure(err)
    throw err
  } finally {
    timings[`${kind}Ms`] += clock() - started
    if (remote) timings.inFlight -= 1
  }
}

async function afterGate<T>(gate: WriteGate | undefined, call: () => Promise<T>): Promise<T> {
  if (gate !== undefined) await gate.ready
  return call()
}

/** A D1Database whose queries are timed and counted (a batch is one call); writes wait for `gate`. */
export function timedD1(
  db: D1Database,
  timings: BindingTimings,
  clock: Clock = () => performance.now(),
  gate?: WriteGate,
): D1Database {
  const originals = new WeakMap<object, D1PreparedStatement>()
  const sqlOf = new WeakMap<object, string>()
  const writes = (sql: string | undefined): boolean => sql === undefined || !READING_SQL.test(sql)
  const run = <T>(isWrite: boolean, call: () => Promise<T>): Promise<T> =>
    isWrite && gate !== undefined
      ? afterGate(gate, () => timed(timings, 'd1', call, clock))
      : timed(timings, 'd1', call, clock)
  const wrapStatement = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrapStatement(target.bind(...args), sql)
        if (typeof property === 'string' && STATEMENT_RUNNERS.has(property)) {
          return (...args: unknown[]) =>
            run(writes(sql), () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args))
        }
        return (value as (...a: unknown[]) => unknown).bind(target)
      },
    })
    originals.set(proxy, statement)
    sqlOf.set(proxy, sql)
    return proxy
  }
  return new Proxy(db, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (property === 'prepare') return (query: string) => wrapStatement(target.prepare(query), query)
      if (property === 'batch') {
        // D1 must see its own statement objects, not our proxies.
        return (statements: D1PreparedStatement[]) =>
          run(
            statements.some((s) => writes(sqlOf.get(s))),
            () => target.batch(statements.map((s) => originals.get(s) ?? s)),
          )
      }
      if (property === 'exec') return (query: string) => run(true, () => target.exec(query))
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

/** A KVNamespace whose operations are timed and counted; writes wait for `gate`. */
export function timedKv(
  kv: KVNamespace,
  timings: BindingTimings,
  clock: Clock = () => performance.now(),
  gate?: WriteGate,
): KVNamespace {
  return new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (typeof value !== 'function') return value
      if (typeof property === 'string' && KV_METHODS.has(property)) {
        return (...args: unknown[]) => {
          const call = () =>
            timed(timings, 'kv', () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args), clock)
          return KV_WRITES.has(property) ? afterGate(gate, call) : call()
        }
      }
      return (value as (...a: unknown[]) => unknown).bind(target)
    },
  })
}

/** Times and counts a call that answers at the worker's own location (Cache API, rate limiter). */
export function timedLocal<T>(
  timings: BindingTimings | undefined,
  kind: 'cache' | 'rateLimit',
  call: () => Promise<T>,
): Promise<T> {
  return timings === undefined ? call() : timed(timings, kind, call, () => performance.now())
}

/** Server-Timing entries: durations, calls, the D1 session start and the depth. */
export function serverTimingOf(timings: BindingTimings | undefined, totalMs: number): string {
  const t = timings ?? newTimings()
  return [
    `d1;dur=${t.d1Ms.toFixed(1)};desc="calls=${t.d1Calls} start=${t.d1Start}"`,
    `kv;dur=${t.kvMs.toFixed(1)};desc="calls=${t.kvCalls}"`,
    `cache;dur=${t.cacheMs.toFixed(1)};desc="calls=${t.cacheCalls}"`,
    `ratelimit;dur=${t.rateLimitMs.toFixed(1)};desc="calls=${t.rateLimitCalls}"`,
    `rt;desc="${t.depth}"`,
    `total;dur=${totalMs.toFixed(1)}`,
  ].join(', ')
}
