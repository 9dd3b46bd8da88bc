// Bench-only Worker entry for `npm run bench:geo` (scripts/bench/bench-geo.ts). NEVER deployed: wrangler.toml's
// `main` stays src/index.ts; bench-geo builds this file with `wrangler deploy scripts/bench/geo-worker.ts
// --dry-run` and serves the bundle with Miniflare.
//
// It runs the real app (src/index.ts) with its bindings wrapped so that each call waits a modelled
// round-trip time (a real setTimeout, so calls that overlap in the app overlap here too) before
// and after it runs against the local simulator:
//
//   D1    the session from withSession(constraint): every statement (run/all/first/raw) or batch()
//         is one round trip, to the primary when the session started at 'first-primary', to the
//         region's replica for 'first-unconstrained' or a bookmark. A write is forwarded to the
//         primary (D1 replicas serve reads only), and the session stays there afterwards (the
//         replica may not have the write yet). DB used without a session goes to the primary.
//   KV    get/getWithMetadata: a hot read (cached at the location) by default; with `x-bench-kv:
//         cold` every read is cold (central store); with `x-bench-kv: idle` a session's own key
//         (`sid:…`) is cold and the shared keys every signed-in request reads (the revocation
//         filter) stay hot: what the first request of a session idle for longer than
//         REVOCATION_CACHE_TTL meets at a location that serves other users. list: cold;
//         put/delete: a write to the central store.
//   Cache caches.default match/put/delete (Cache.prototype, patched here): answered at the location.
//         The Cache API does not replicate between locations: `x-bench-location: NAME` gives a
//         request its own cache (e.g. a logout made at another location leaves no marker here).
//   DO    the RevocationPublisher (logout, …): unmodelled, no bench row measures a revocation.
//   Rate limiters limit(): answered at the location.
//
// The model (milliseconds per region) comes from the BENCH_GEO_MODEL binding (JSON written by
// bench-geo.ts from scripts/bench/geo-rtt.json); the region from the request header `x-bench-region`.
// Without that header every wait is zero: the "local database" run of the single-origin baseline.
// Each response carries `x-bench-geo`, the count of modelled calls of each kind.
import { AsyncLocalStorage } from 'node:async_hooks'
import worker from '../../src/index'
// wrangler.toml binds these Durable Objects: the entry must export their classes (unmodelled).
export { NewsletterSender, RevocationPublisher } from '../../src/index'
import type { Env } from '../../src/config'
import type { MailQueueMessage } from '../../src/lib/mail-queue-messages'

/** Modelled waits of one region, in milliseconds (round trips from the worker's location). */
export interface GeoWaits {
  d1PrimaryMs: number
  d1ReplicaMs: number
  kvHotReadMs: number
  kvColdReadMs: number
  kvWriteMs: number
  cacheMs: number
  rateLimitMs: number
}

export interface GeoModel {
  regions: Record<string, GeoWaits>
}

// Also spelled out in bench-geo.ts (a Worker module exports only handlers and types).
const REGION_HEADER = 'x-bench-region'
const KV_HEADER = 'x-bench-kv'
const LOCATION_HEADER = 'x-bench-location'
const COUNTS_HEADER = 'x-bench-geo'

type GeoEnv = Env & { BENCH_GEO_MODEL?: string }

const ZERO: GeoWaits = {
  d1PrimaryMs: 0,
  d1ReplicaMs: 0,
  kvHotReadMs: 0,
  kvColdReadMs: 0,
  kvWriteMs: 0,
  cacheMs: 0,
  rateLimitMs: 0,
}
const COUNTED = ['d1Primary', 'd1Replica', 'kvHot', 'kvCold', 'kvWrite', 'cache', 'rateLimit'] as const
type Counted = (typeof COUNTED)[number]

type KvState = 'hot' | 'cold' | 'idle'

interface RequestModel {
  waits: GeoWaits
  kv: KvState
  /** Another location's Cache API (absent: this one's). */
  location: string | undefined
  counts: Record<Counted, number>
}

const current = new AsyncLocalStorage<RequestModel>()

const SPLIT_MS = 10
const sleep = (ms: number): Promise<void> =>
  ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve()

/**
 * One modelled round trip: half the RTT out, the call, half the RTT back (also when it fails).
 * A short one (under SPLIT_MS) is one wait before the call: each timer overshoots by up to ~1 ms.
 */
async function roundTrip<T>(kind: Counted, pick: (waits: GeoWaits) => number, call: () => Promise<T>): Promise<T> {
  const model = current.getStore()
  if (model === undefined) return call()
  model.counts[kind] += 1
  const ms = pick(model.waits)
  const back = ms < SPLIT_MS ? 0 : ms / 2
  await sleep(ms - back)
  try {
    return await call()
  } finally {
    await sleep(back)
  }
}

/** A call answered at the worker's own location (Cache API, rate limiter): one short wait first. */
async function atLocation<T>(kind: Counted, pick: (waits: GeoWaits) => number, call: () => Promise<T>): Promise<T> {
  const model = current.getStore()
  if (model === undefined) return call()
  model.counts[kind] += 1
  await sleep(pick(model.waits))
  return call()
}

// ---- D1 ---------------------------------------------------------------------------------------

const RUNNERS = new Set(['run', 'all', 'first', 'raw'])
const WRITING_SQL = /^\s*(insert|update|delete|replace|create|drop|alter)\b/i

interface SessionPlace {
  atPrimary: boolean
}

/** Where a call of this session goes; a write moves the session to the primary for good. */
function placeOf(place: SessionPlace, writes: boolean): 'd1Primary' | 'd1Replica' {
  if (writes) place.atPrimary = true
  return place.atPrimary ? 'd1Primary' : 'd1Replica'
}

const d1Wait = (kind: 'd1Primary' | 'd1Replica') => (waits: GeoWaits) =>
  kind === 'd1Primary' ? waits.d1PrimaryMs : waits.d1ReplicaMs

/** prepare()/batch()/exec() of a D1 database or session, each call one modelled round trip. */
function geoStatements(target: D1Database | D1DatabaseSession, place: SessionPlace) {
  const originals = new WeakMap<object, D1PreparedStatement>()
  const sqlOf = new WeakMap<object, string>()
  const wrap = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(inner, property) {
        const value = Reflect.get(inner, property, inner) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrap(inner.bind(...args), sql)
        if (typeof property === 'string' && RUNNERS.has(property)) {
          return (...args: unknown[]) => {
            const kind = placeOf(place, WRITING_SQL.test(sql))
            return roundTrip(kind, d1Wait(kind), () =>
              (value as (...a: unknown[]) => Promise<unknown>).apply(inner, args),
            )
          }
        }
        return (value as (...a: unknown[]) => unknown).bind(inner)
      },
    })
    originals.set(proxy, statement)
    sqlOf.set(proxy, sql)
    return proxy
  }
  return {
    prepare: (query: string) => wrap(target.prepare(query), query),
    // One round trip for the whole batch; D1 must see its own statement objects.
    batch: <T>(statements: D1PreparedStatement[]) => {
      const kind = placeOf(
        place,
        statements.some((s) => WRITING_SQL.test(sqlOf.get(s) ?? '')),
      )
      return roundTrip(kind, d1Wait(kind), () => target.batch<T>(statements.map((s) => originals.get(s) ?? s)))
    },
  }
}

function geoD1(db: D1Database): D1Database {
  const direct = geoStatements(db, { atPrimary: true })
  return new Proxy(db, {
    get(target, property) {
      if (property === 'withSession') {
        return (constraint?: D1SessionConstraint | D1SessionBookmark) => {
          const session = target.withSession(constraint)
          const statements = geoStatements(session, { atPrimary: constraint === 'first-primary' })
          return { ...statements, getBookmark: () => session.getBookmark() } as unknown as D1DatabaseSession
        }
      }
      if (property === 'prepare') return direct.prepare
      if (property === 'batch') return direct.batch
      if (property === 'exec')
        return (query: string) => roundTrip('d1Primary', d1Wait('d1Primary'), () => target.exec(query))
      const value = Reflect.get(target, property, target) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

// ---- KV, rate limiters, Cache API ---------------------------------------------------------------

/** A session's own revocation key (src/sessions/revocation-keys.ts names it). */
const SESSION_KEY = /^sid:/

function isColdRead(state: KvState, key: string): boolean {
  return state === 'cold' || (state === 'idle' && SESSION_KEY.test(key))
}

function geoKv(kv: KVNamespace): KVNamespace {
  return new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (typeof value !== 'function') return value
      const call = (args: unknown[]) => () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
      if (property === 'get' || property === 'getWithMetadata') {
        return (...args: unknown[]) =>
          isColdRead(current.getStore()?.kv ?? 'hot', String(args[0]))
            ? roundTrip('kvCold', (w) => w.kvColdReadMs, call(args))
            : roundTrip('kvHot', (w) => w.kvHotReadMs, call(args))
      }
      if (property === 'list') return (...args: unknown[]) => roundTrip('kvCold', (w) => w.kvColdReadMs, call(args))
      if (property === 'put' || property === 'delete')
        return (...args: unknown[]) => roundTrip('kvWrite', (w) => w.kvWriteMs, call(args))
      return (value as (...a: unknown[]) => unknown).bind(target)
    },
  })
}

function geoRateLimit(limiter: RateLimit | undefined): RateLimit | undefined {
  if (limiter === undefined) return undefined
  return {
    limit: (options) =>
      atLocation(
        'rateLimit',
        (w) => w.rateLimitMs,
        () => limiter.limit(options),
      ),
  }
}

let cachePatched = false

/** Replaces match/put/delete of the Cache API (shared by caches.default and caches.open()). */
function patchCacheApi(): void {
  if (cachePatched) return
  cachePatched = true
  const proto = Object.getPrototypeOf(caches.default) as Cache
  const { match, put, delete: remove } = proto
  proto.match = function (this: Cache, key: RequestInfo | URL, options?: CacheQueryOptions) {
    return atLocation(
      'cache',
      (w) => w.cacheMs,
      () => match.call(this, atThisLocation(key), options),
    )
  }
  proto.put = function (this: Cache, key: RequestInfo | URL, response: Response) {
    return atLocation(
      'cache',
      (w) => w.cacheMs,
      () => put.call(this, atThisLocation(key), response),
    )
  }
  proto.delete = function (this: Cache, key: RequestInfo | URL, options?: CacheQueryOptions) {
    return atLocation(
      'cache',
      (w) => w.cacheMs,
      () => remove.call(this, atThisLocation(key), options),
    )
  }
}

/** The cache key as another location's cache would hold it (unchanged for this location). */
function atThisLocation(key: RequestInfo | URL): RequestInfo | URL {
  const location = current.getStore()?.location
  if (location === undefined) return key
  const url = new URL(key instanceof Request ? key.url : String(key))
  url.searchParams.set('bench-location', location)
  return key instanceof Request ? new Request(url, key) : url
}

// ---- the entry ----------------------------------------------------------------------------------

const wrappedEnvs = new WeakMap<object, GeoEnv>()
const parsedModels = new Map<string, GeoModel>()

/** One wrapped env per env object, so the app's per-isolate memos (config, keys) stay warm. */
function wrapEnv(env: GeoEnv): GeoEnv {
  let wrapped = wrappedEnvs.get(env)
  if (wrapped === undefined) {
    wrapped = {
      ...env,
      DB: geoD1(env.DB),
      REVOKED_TOKENS: geoKv(env.REVOKED_TOKENS),
      CREDENTIALS_BY_IP: geoRateLimit(env.CREDENTIALS_BY_IP),
      CREDENTIALS_BY_ACCOUNT: geoRateLimit(env.CREDENTIALS_BY_ACCOUNT),
      WRITES_BY_USER: geoRateLimit(env.WRITES_BY_USER),
    }
    wrappedEnvs.set(env, wrapped)
  }
  return wrapped
}

function waitsFor(env: GeoEnv, region: string | null): GeoWaits | undefined {
  if (region === null || region === '') return ZERO
  const raw = env.BENCH_GEO_MODEL ?? '{"regions":{}}'
  let model = parsedModels.get(raw)
  if (model === undefined) {
    model = JSON.parse(raw) as GeoModel
    parsedModels.set(raw, model)
  }
  return model.regions[region]
}

function kvStateOf(header: string | null): KvState {
  return header === 'cold' || header === 'idle' ? header : 'hot'
}

export default {
  async fetch(request: Request, env: GeoEnv, ctx: ExecutionContext): Promise<Response> {
    patchCacheApi()
    const region = request.headers.get(REGION_HEADER)
    const waits = waitsFor(env, region)
    if (waits === undefined)
      return new Response(`geo-worker: unknown region ${JSON.stringify(region)}\n`, { status: 400 })
    const model: RequestModel = {
      waits,
      kv: kvStateOf(request.headers.get(KV_HEADER)),
      location: request.headers.get(LOCATION_HEADER) ?? undefined,
      counts: { d1Primary: 0, d1Replica: 0, kvHot: 0, kvCold: 0, kvWrite: 0, cache: 0, rateLimit: 0 },
    }
    const forwarded = new Request(request)
    forwarded.headers.delete(REGION_HEADER)
    forwarded.headers.delete(KV_HEADER)
    forwarded.headers.delete(LOCATION_HEADER)
    const response = await current.run(model, () => worker.fetch(forwarded, wrapEnv(env), ctx))
    const answered = new Response(response.body, response)
    answered.headers.set(COUNTS_HEADER, COUNTED.map((kind) => `${kind}=${model.counts[kind]}`).join(';'))
    return answered
  },
  scheduled(controller: ScheduledController, env: GeoEnv, ctx: ExecutionContext): void {
    worker.scheduled(controller, wrapEnv(env), ctx)
  },
  // The mail queue (an outbox hand-off after registration), unmodelled.
  queue(batch: MessageBatch<unknown>, env: GeoEnv): Promise<void> {
    return worker.queue(batch as MessageBatch<MailQueueMessage>, env)
  },
} satisfies ExportedHandler<GeoEnv>
