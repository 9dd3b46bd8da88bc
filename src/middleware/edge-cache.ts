import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { RequestIdVariables } from 'hono/request-id'
import { PUBLIC_REVALIDATE, matchesIfNoneMatch } from '../http/conditional-get'
import { carriesCredentials } from '../http/cookie-session'
import { isSafeMethod } from '../http/request'
import { policyOf } from './route-policy'

// Anonymous GETs of routes that declare `edgeCached` (posts, profiles, and their lists) are served
// from the Workers Cache API of the location. Every cache key embeds a "generation"; a successful
// write to a route that declares `purgesEdgeCache` replaces the generation, so everything cached
// before it is unreachable at once and a reader at the same location never sees data older than
// a write. Other locations keep their copies for at most EDGE_TTL_SECONDS. Responses to requests
// with credentials are never cached.

const EDGE_TTL_SECONDS = 60
const CACHE_ORIGIN = 'https://edge-cache.edgepress.internal'
const GENERATION_KEY = `${CACHE_ORIGIN}/generation`

export function edgeCache() {
  return createMiddleware<{ Variables: RequestIdVariables }>(async function edgeCache(c, next) {
    const policy = policyOf(c)
    if (!isSafeMethod(c.req.method)) {
      await next()
      if (c.res.status < 400 && policy.purgesEdgeCache === true) await newGeneration()
      return
    }
    if (c.req.method !== 'GET' || policy.edgeCached !== true || carriesCredentials(c)) return next()
    const cache = caches.default
    const url = new URL(c.req.url)
    // The host is part of the key (a worker may serve several hostnames, and lists embed absolute URLs).
    const key = new Request(`${CACHE_ORIGIN}/${await currentGeneration()}/${url.host}${url.pathname}${url.search}`)
    const hit = await cache.match(key)
    if (hit !== undefined) return (c.res = fromCache(c, hit))
    await next()
    if (c.res.status !== 200 || c.res.headers.has('set-cookie')) return
    const stored = new Response(c.res.clone().body, c.res)
    stored.headers.set('Cache-Control', `public, s-maxage=${EDGE_TTL_SECONDS}`)
    await cache.put(key, stored)
    c.res.headers.set('X-Edge-Cache', 'MISS')
  })
}

function fromCache(c: Context<{ Variables: RequestIdVariables }>, hit: Response): Response {
  const headers = new Headers(hit.headers)
  headers.set('Cache-Control', PUBLIC_REVALIDATE)
  headers.set('X-Edge-Cache', 'HIT')
  headers.delete('X-D1-Bookmark') // the cached copy's bookmark and id belong to the request that filled it
  headers.set('X-Request-Id', c.var.requestId)
  const etag = headers.get('etag')
  if (etag !== null && matchesIfNoneMatch(c.req.header('if-none-match'), etag)) {
    return new Response(null, { status: 304, headers })
  }
  return new Response(hit.body, { status: hit.status, headers })
}

async function currentGeneration(): Promise<string> {
  const stored = await caches.default.match(GENERATION_KEY)
  if (stored !== undefined) return stored.text()
  // Evicted or never set: start a fresh generation rather than fall back to a fixed one, which
  // could resurrect entries cached before the eviction.
  return newGeneration()
}

async function newGeneration(): Promise<string> {
  const generation = crypto.randomUUID()
  await caches.default.put(
    GENERATION_KEY,
    new Response(generation, { headers: { 'Cache-Control': 'public, s-maxage=31536000' } }),
  )
  return generation
}
