import { createMiddleware } from 'hono/factory'
import type { RequestIdVariables } from 'hono/request-id'
import { PUBLIC_REVALIDATE, matchesIfNoneMatch } from '../http/conditional-get'
import { carriesCredentials } from '../http/cookie-mode'
import { BOOKMARK_HEADER, isSafeMethod } from '../http/request'
import { timedLocal } from '../lib/timed-bindings'
import type { BindingTimings } from '../lib/timed-bindings'
import type { ObserveVariables } from './observe'
import { policyOf } from './route-policy'

// Anonymous GETs of routes that declare `edgeCached` (posts, profiles, their lists, the feed) are
// served from the Workers Cache API of the location. Every stored copy names the "generation" it
// was stored in; a successful write to a route that declares `purgesEdgeCache` replaces the
// generation, so everything cached before it is a miss at once and a reader at the same location
// never sees data older than a write. A hit is one wave of lookups, not two: the copy and the
// current generation are looked up together (the key does not depend on the generation), and
// the copy counts only if it names that generation. Other locations keep their copies for at most EDGE_TTL_SECONDS.
// Responses to requests with credentials are never cached.
//
// A handler may say its answer is good only until some moment (`edgeCacheUntil`: a list whose
// next scheduled post goes out in 5 s). Each stored copy carries its expiry, to the millisecond,
// in EXPIRES_HEADER, and a hit past it is a miss: the Cache API's own expiry counts whole seconds
// from when it stored the copy, which could show a scheduled post late.

const EDGE_TTL_SECONDS = 60
const EXPIRES_HEADER = 'X-Edge-Cache-Expires'
const GENERATION_HEADER = 'X-Edge-Cache-Generation'

export interface EdgeCacheVariables {
  /**
   * Set on a cache miss: the D1 bookmark of the write that started the current generation. The
   * response is about to be cached for everyone, so its D1 session must start there (see
   * src/middleware/bindings.ts), not at a replica that may not have that write yet.
   */
  cacheFillBookmark?: string
  /**
   * Set by a handler whose answer changes by itself at a known time (the next scheduled
   * publication): the cached copy expires then, if that is sooner than EDGE_TTL_SECONDS.
   */
  edgeCacheUntil?: Date
}
const CACHE_ORIGIN = 'https://edge-cache.edgepress.internal'
const GENERATION_KEY = `${CACHE_ORIGIN}/generation`

export function edgeCache() {
  return createMiddleware<{ Variables: RequestIdVariables & EdgeCacheVariables & ObserveVariables }>(
    async function edgeCache(c, next) {
      const policy = policyOf(c)
      const cache = timedCache(c.get('timings'))
      if (!isSafeMethod(c.req.method)) {
        await next()
        if (c.res.status < 400 && policy.purgesEdgeCache === true)
          await newGeneration(cache, c.res.headers.get(BOOKMARK_HEADER))
        return
      }
      if (c.req.method !== 'GET' || policy.edgeCached !== true || carriesCredentials(c)) return next()
      const url = new URL(c.req.url)
      // The host is part of the key (a worker may serve several hostnames, and lists embed absolute URLs).
      const key = new Request(`${CACHE_ORIGIN}/copies/${url.host}${url.pathname}${url.search}`)
      const [generation, hit] = await Promise.all([currentGeneration(cache), cache.match(key)])
      if (hit !== undefined && hit.headers.get(GENERATION_HEADER) === generation.id && !isExpired(hit, Date.now())) {
        c.res = fromCache(
          hit,
          { requestId: c.get('requestId'), ifNoneMatch: c.req.header('if-none-match') },
          generation.bookmark,
        )
        return
      }
      if (generation.bookmark !== null) c.set('cacheFillBookmark', generation.bookmark)
      await next()
      if (c.res.status !== 200 || c.res.headers.has('set-cookie')) return
      c.res.headers.set('X-Edge-Cache', 'MISS')
      const now = Date.now()
      const expiresAt = Math.min(
        now + EDGE_TTL_SECONDS * 1000,
        c.get('edgeCacheUntil')?.getTime() ?? Number.POSITIVE_INFINITY,
      )
      const ttlSeconds = Math.ceil((expiresAt - now) / 1000)
      if (ttlSeconds <= 0) return
      const stored = new Response(c.res.clone().body, c.res)
      stored.headers.delete('X-Edge-Cache')
      stored.headers.set('Cache-Control', `public, s-maxage=${ttlSeconds}`)
      stored.headers.set(EXPIRES_HEADER, String(expiresAt))
      stored.headers.set(GENERATION_HEADER, generation.id)
      await cache.put(key, stored)
    },
  )
}

/** caches.default, each call timed and counted (it answers at this location: no round trip). */
function timedCache(timings: BindingTimings) {
  return {
    match: (key: Request | string) => timedLocal(timings, 'cache', () => caches.default.match(key)),
    put: (key: Request | string, response: Response) =>
      timedLocal(timings, 'cache', () => caches.default.put(key, response)),
  }
}

type TimedCache = ReturnType<typeof timedCache>

/** A stored copy past the expiry it was stored with. */
function isExpired(hit: Response, now: number): boolean {
  const expiresAt = Number(hit.headers.get(EXPIRES_HEADER))
  return !Number.isFinite(expiresAt) || expiresAt <= now
}

function fromCache(
  hit: Response,
  request: { requestId: string; ifNoneMatch: string | undefined },
  bookmark: string | null,
): Response {
  const headers = new Headers(hit.headers)
  headers.delete(EXPIRES_HEADER)
  headers.delete(GENERATION_HEADER)
  headers.set('Cache-Control', PUBLIC_REVALIDATE)
  headers.set('X-Edge-Cache', 'HIT')
  // The cached copy's bookmark and id belong to the request that filled it; the generation's
  // bookmark is one the content is at least as new as.
  headers.delete(BOOKMARK_HEADER)
  if (bookmark !== null) headers.set(BOOKMARK_HEADER, bookmark)
  headers.set('X-Request-Id', request.requestId)
  const etag = headers.get('etag')
  if (etag !== null && matchesIfNoneMatch(request.ifNoneMatch, etag)) {
    return new Response(null, { status: 304, headers })
  }
  return new Response(hit.body, { status: hit.status, headers })
}

/**
 * A generation of the cache: its id (part of every key) and the D1 bookmark of the write that
 * started it, so the read that refills the cache sees that write even from a lagging replica.
 */
interface Generation {
  id: string
  bookmark: string | null
}

async function currentGeneration(cache: TimedCache): Promise<Generation> {
  const stored = await cache.match(GENERATION_KEY)
  if (stored !== undefined) {
    const [id = '', bookmark = ''] = (await stored.text()).split(' ')
    return { id, bookmark: bookmark === '' ? null : bookmark }
  }
  // Evicted or never set: start a fresh generation rather than fall back to a fixed one, which
  // could resurrect entries cached before the eviction.
  return newGeneration(cache, null)
}

async function newGeneration(cache: TimedCache, bookmark: string | null): Promise<Generation> {
  const generation = { id: crypto.randomUUID(), bookmark }
  await cache.put(
    GENERATION_KEY,
    new Response(`${generation.id} ${bookmark ?? ''}`, { headers: { 'Cache-Control': 'public, s-maxage=31536000' } }),
  )
  return generation
}
