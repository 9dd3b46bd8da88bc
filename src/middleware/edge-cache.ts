import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import { matchesIfNoneMatch } from '../routes/http-caching'
import type { AppEnv } from '../router'

// Anonymous GETs of public data (posts, profiles, and their lists) are served from the Workers
// Cache API of the location. Every cache key embeds a "generation"; a successful write to posts
// or users replaces the generation, so everything cached before it is unreachable at once and a
// reader at the same location never sees data older than a write. Other locations keep their
// copies for at most EDGE_TTL_SECONDS. Responses to requests with credentials are never cached.

const EDGE_TTL_SECONDS = 60
const CACHE_ORIGIN = 'https://edge-cache.edgepress.internal'
const GENERATION_KEY = `${CACHE_ORIGIN}/generation`
const CACHEABLE = /^\/api\/v1\/(posts|users)(\/[^/]+(\/posts)?)?$/
const INVALIDATING = /^\/api\/v1\/(posts|users|auth\/register)(\/|$)/
const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

export function edgeCache() {
  return createMiddleware<AppEnv>(async function edgeCache(c, next) {
    const path = c.req.path
    if (UNSAFE_METHODS.has(c.req.method)) {
      await next()
      if (c.res.status < 400 && INVALIDATING.test(path)) await newGeneration()
      return
    }
    if (c.req.method !== 'GET' || !CACHEABLE.test(path) || path === '/api/v1/users/me' || hasCredentials(c)) {
      return next()
    }
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

function hasCredentials(c: Context): boolean {
  return c.req.header('authorization') !== undefined || (c.req.header('cookie') ?? '').includes('__Host-edgepress-')
}

function fromCache(c: Context, hit: Response): Response {
  const headers = new Headers(hit.headers)
  headers.set('Cache-Control', 'public, no-cache')
  headers.set('X-Edge-Cache', 'HIT')
  headers.delete('X-D1-Bookmark') // the cached copy's bookmark and id belong to the request that filled it
  headers.set('X-Request-Id', c.get('requestId') as string)
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
