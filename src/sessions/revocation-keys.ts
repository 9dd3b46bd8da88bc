import type { Env } from '../config'
import { ApiError } from '../lib/api-error'
import { DependencyUnavailable } from '../lib/outages'
import { timedLocal } from '../lib/timed-bindings'
import type { BindingTimings, WriteGate } from '../lib/timed-bindings'
import { REVOCATION_FILTER_KEY, SESSION_KEY_PREFIX, decodeRevocationFilter } from './revocation-filter'
import type { FilterEntry, RevocationPublisher } from './revocation-publisher'

// The single owner of what REVOKED_TOKENS holds, and of how a revocation is checked.
//
// Every revocation edgepress makes ends a whole login session (logout, reuse detection,
// logout-all, password change or reset, account deletion), so it is recorded per session, in three
// places that together keep the signed-in hot path at one hot KV read:
// - `sid:<sid>`, the exact answer, living until the session's last token has expired;
// - the shared filter (REVOCATION_FILTER_KEY), the fingerprints of the sessions revoked within the
//   access-token lifetime, published by the RevocationPublisher Durable Object. Every signed-in
//   request reads it, so it stays hot at every location that serves them; only a fingerprint it
//   holds sends the check on to the exact key;
// - a marker in the Cache API of the location that revoked, which answers there at once, before
//   the new copy of the filter has reached it.
// Rotated refresh tokens need none of these: the session row in D1 is the authority for refresh
// and knows the current jti. docs/design.md § Revocation gives the bound and the sizes.

// A key nobody writes: reading it proves KV answers without depending on any data (/health).
const PROBE_KEY = 'health:probe'

// KV refuses expirationTtl below 60 s (also enforced locally).
const KV_MIN_TTL_SECONDS = 60

// Cache API keys are URLs; this host is never fetched (src/middleware/edge-cache.ts has its own).
const MARKER_ORIGIN = 'https://revocations.edgepress.internal'

/** The one RevocationPublisher (wrangler.toml REVOCATIONS) every revocation goes through. */
const PUBLISHER_NAME = 'sessions'

/** Where revocations are written and read for one request (or one test). */
export interface RevocationStore {
  /** REVOKED_TOKENS (timed for Server-Timing in a request). */
  kv: KVNamespace
  /** The RevocationPublisher namespace; without it nothing can be revoked (reads still work). */
  publisher: DurableObjectNamespace | undefined
  /** This location's cache for markers; undefined: none (outside workerd, or a test of another location). */
  markers: Cache | undefined
  /** The request's figures: marker lookups count as Cache API calls. */
  timings?: BindingTimings | undefined
  /**
   * Holds the publisher's record back until the request is admitted, as KV and D1 writes are
   * (src/lib/timed-bindings.ts): a revoked token or a user over the write limit records nothing.
   */
  gate?: WriteGate | undefined
  /**
   * Hands work to the runtime past the response (ctx.waitUntil): asking the publisher for a first
   * copy when a check finds none. Absent: nobody asks (the next revocation publishes one).
   */
  afterResponse?: ((work: Promise<unknown>) => void) | undefined
}

/** The store of a worker's env: caches.default holds the markers where there is one. */
export function revocationStoreOf(
  env: Pick<Env, 'REVOKED_TOKENS' | 'REVOCATIONS'>,
  overrides: Partial<RevocationStore> = {},
): RevocationStore {
  const markers = (globalThis as { caches?: { default?: Cache } }).caches?.default
  return { kv: env.REVOKED_TOKENS, publisher: env.REVOCATIONS, markers, ...overrides }
}

export interface SessionRevocation {
  sid: string
  /** Epoch seconds after which no token of the session can verify, so the exact key may expire. */
  lastTokenExpiresAt: number
  /**
   * Epoch seconds until which the shared filter must hold the session (default
   * `lastTokenExpiresAt`): the expiry of the last token minted before the revocation. Only the
   * exact key outlives it, for tokens D1 cannot vouch for.
   */
  filterUntil?: number
}

/**
 * Marks sessions revoked: the exact keys and the publisher's record at once, then this location's
 * markers. Safe to repeat; a failure of either of the first two fails it (503 for an outage), and
 * then nothing has been marked here, so the same request can be retried with the same token.
 */
export async function revokeSessionKeys(
  store: RevocationStore,
  revocations: SessionRevocation[],
  reason: string,
  now: Date,
): Promise<void> {
  await recordRevocations(store, revocations, reason, now)
  await markRevokedHere(store, revocations, now)
}

/** The exact keys and the publisher's record, at once: the revocation, without this location's markers. */
export async function recordRevocations(
  store: RevocationStore,
  revocations: SessionRevocation[],
  reason: string,
  now: Date,
): Promise<void> {
  if (revocations.length === 0) return
  const nowSeconds = Math.floor(now.getTime() / 1000)
  await Promise.all([
    ...revocations.map(({ sid, lastTokenExpiresAt }) =>
      store.kv.put(SESSION_KEY_PREFIX + sid, reason, {
        expirationTtl: Math.max(KV_MIN_TTL_SECONDS, lastTokenExpiresAt - nowSeconds + 1),
      }),
    ),
    recordWithPublisher(store, revocations.map(filterEntryOf)),
  ])
}

/** This location's markers, once the revocations are recorded (revokeSessionKeys does both). */
export async function markRevokedHere(
  store: RevocationStore,
  revocations: SessionRevocation[],
  now: Date,
): Promise<void> {
  if (revocations.length === 0) return
  await markHere(store, revocations.map(filterEntryOf), Math.floor(now.getTime() / 1000))
}

const filterEntryOf = ({ sid, lastTokenExpiresAt, filterUntil }: SessionRevocation): FilterEntry => ({
  sid,
  until: filterUntil ?? lastTokenExpiresAt,
})

/** Extends how long the filter holds sessions already revoked (for a session D1 did not know). */
export async function extendFilterEntries(store: RevocationStore, entries: FilterEntry[]): Promise<void> {
  await recordWithPublisher(store, entries)
}

/** The one RevocationPublisher of a namespace (REVOCATIONS). */
export function publisherOf(namespace: DurableObjectNamespace): DurableObjectStub<RevocationPublisher> {
  const typed = namespace as unknown as DurableObjectNamespace<RevocationPublisher>
  return typed.get(typed.idFromName(PUBLISHER_NAME))
}

async function recordWithPublisher(store: RevocationStore, entries: FilterEntry[]): Promise<void> {
  // A filter that misses revocations would accept their tokens: refuse to revoke half-way.
  if (store.publisher === undefined) throw new Error('REVOCATIONS is not bound (wrangler.toml)')
  await store.gate?.ready
  try {
    await publisherOf(store.publisher).record(entries)
  } catch (err) {
    throw new DependencyUnavailable('The revocation publisher', err)
  }
}

const markerKey = (sid: string): string => `${MARKER_ORIGIN}/sid/${encodeURIComponent(sid)}`

async function markHere(store: RevocationStore, entries: FilterEntry[], nowSeconds: number): Promise<void> {
  const cache = store.markers
  if (cache === undefined) return
  try {
    await Promise.all(
      entries.map(({ sid, until }) =>
        timedLocal(store.timings, 'cache', () =>
          cache.put(
            markerKey(sid),
            new Response(null, { headers: { 'cache-control': `max-age=${Math.max(1, until - nowSeconds)}` } }),
          ),
        ),
      ),
    )
  } catch (err) {
    // The revocation stands (exact key and filter); this location sees it when the filter arrives.
    console.error(JSON.stringify({ level: 'error', message: 'revocation marker not cached', error: nameOf(err) }))
  }
}

/** True: marked revoked here; false: not marked; undefined: the cache could not answer. */
async function isMarkedHere(store: RevocationStore, sid: string): Promise<boolean | undefined> {
  const cache = store.markers
  if (cache === undefined) return false
  try {
    const marker = await timedLocal(store.timings, 'cache', () => cache.match(markerKey(sid)))
    return marker !== undefined
  } catch {
    return undefined
  }
}

/**
 * Has the session this token belongs to been revoked? One hot KV read (the shared filter) and one
 * Cache API lookup (this location's markers), side by side; the exact key only when the filter
 * holds the session's fingerprint, or when there is no filter or marker answer to go by.
 * `cacheTtlSeconds` is how long this location may keep what KV answered (KV's minimum is 30 s):
 * with KV's own propagation it bounds how long a revocation made elsewhere can go unnoticed here.
 */
export async function isSessionRevoked(store: RevocationStore, sid: string, cacheTtlSeconds: number): Promise<boolean> {
  const [filterBytes, markedHere] = await Promise.all([
    store.kv.get(REVOCATION_FILTER_KEY, { type: 'arrayBuffer', cacheTtl: cacheTtlSeconds }),
    isMarkedHere(store, sid),
  ])
  if (markedHere === true) return true
  if (filterBytes === null) askForFirstCopy(store)
  const filter = filterBytes === null ? undefined : decodeRevocationFilter(filterBytes)
  if (markedHere === false && filter !== undefined && !filter.mayHold(sid)) return false
  return (await store.kv.get(SESSION_KEY_PREFIX + sid, { cacheTtl: cacheTtlSeconds })) !== null
}

// One ask per isolate and publisher a minute: until the copy reaches this location, every check
// finds none.
const ASK_INTERVAL_MS = 60_000
const askedAt = new WeakMap<DurableObjectNamespace, number>()

/** No filter yet (a new namespace, or one written before the filter existed): ask for a first copy. */
function askForFirstCopy(store: RevocationStore): void {
  const now = Date.now()
  const { publisher, afterResponse } = store
  if (publisher === undefined || afterResponse === undefined) return
  if (now - (askedAt.get(publisher) ?? Number.NEGATIVE_INFINITY) < ASK_INTERVAL_MS) return
  askedAt.set(publisher, now)
  afterResponse(
    publisherOf(publisher)
      .ensurePublished()
      .catch((err: unknown) => {
        askedAt.delete(publisher)
        console.error(JSON.stringify({ level: 'error', message: 'revocation filter not seeded', error: nameOf(err) }))
      }),
  )
}

/**
 * Refuses a token whose session was revoked (401 `token_revoked`); fails closed with 503 and
 * Retry-After when KV cannot answer.
 */
export async function assertSessionNotRevoked(
  store: RevocationStore,
  sid: string,
  cacheTtlSeconds: number,
): Promise<void> {
  let revoked: boolean
  try {
    revoked = await isSessionRevoked(store, sid, cacheTtlSeconds)
  } catch (err) {
    throw new ApiError(503, 'service_unavailable', 'Token revocation cannot be checked right now.', {
      headers: { 'Retry-After': '5' },
      cause: err,
    })
  }
  if (revoked) throw new ApiError(401, 'token_revoked', 'The token has been revoked.')
}

/** One KV read that proves the namespace answers (/health); throws when it does not. */
export async function pingKv(kv: KVNamespace): Promise<void> {
  await kv.get(PROBE_KEY)
}

function nameOf(err: unknown): string {
  return err instanceof Error ? err.name : 'unknown'
}
