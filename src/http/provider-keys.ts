import type { JSONWebKeySet } from 'jose'
import { ApiError } from '../lib/api-error'

// The JWKS of OpenID Connect providers (docs/design.md § Native sign-in (OIDC)): kept per isolate
// and in this location's Cache API, for as long as the provider's Cache-Control max-age says
// (clamped); fetched again, bypassing both, when a token names a key the cached set lacks, at most
// once per REFETCH_COOLDOWN_MS so tokens with made-up kids cannot make us hammer the provider.

const DEFAULT_MAX_AGE_SECONDS = 3600
const MIN_MAX_AGE_SECONDS = 60
const MAX_MAX_AGE_SECONDS = 86_400
const REFETCH_COOLDOWN_MS = 30_000
const FETCH_TIMEOUT_MS = 5_000
const RETRY_AFTER_SECONDS = '30'
/** Set on the copy in the Cache API: when the set expires, so an isolate that reads it keeps it no longer. */
const EXPIRES_HEADER = 'X-Edgepress-Expires-At'

interface CachedKeySet {
  keys: JSONWebKeySet
  expiresAt: number
}

const inIsolate = new Map<string, CachedKeySet>()
const lastForcedFetch = new Map<string, number>()

/** The key set at `jwksUri`; `fresh` asks the provider again unless it was asked moments ago. */
export async function providerKeySet(jwksUri: string, fresh: boolean, now: Date = new Date()): Promise<JSONWebKeySet> {
  const at = now.getTime()
  if (fresh) {
    const last = lastForcedFetch.get(jwksUri)
    if (last === undefined || at - last >= REFETCH_COOLDOWN_MS || at < last) {
      lastForcedFetch.set(jwksUri, at)
      return fetchAndStore(jwksUri, at)
    }
  }
  const cached = inIsolate.get(jwksUri)
  if (cached !== undefined && cached.expiresAt > at) return cached.keys
  const stored = await fromCacheApi(jwksUri, at)
  if (stored !== undefined) {
    inIsolate.set(jwksUri, stored)
    return stored.keys
  }
  return fetchAndStore(jwksUri, at)
}

async function fromCacheApi(jwksUri: string, at: number): Promise<CachedKeySet | undefined> {
  try {
    const response = await caches.default.match(jwksUri)
    if (response === undefined) return undefined
    const expiresAt = Number(response.headers.get(EXPIRES_HEADER))
    const keys = asKeySet(await response.json())
    if (keys === undefined || !(expiresAt > at)) return undefined
    return { keys, expiresAt }
  } catch {
    // The Cache API is an optimisation: a failure there means asking the provider.
    return undefined
  }
}

async function fetchAndStore(jwksUri: string, at: number): Promise<JSONWebKeySet> {
  let response: Response
  let body: unknown
  try {
    response = await fetch(jwksUri, {
      headers: { Accept: 'application/json' },
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    })
    body = response.ok ? await response.json() : undefined
  } catch {
    throw providerUnavailable()
  }
  const keys = asKeySet(body)
  if (keys === undefined) throw providerUnavailable()
  const maxAge = maxAgeOf(response.headers.get('cache-control'))
  const entry = { keys, expiresAt: at + maxAge * 1000 }
  inIsolate.set(jwksUri, entry)
  try {
    await caches.default.put(
      jwksUri,
      new Response(JSON.stringify(keys), {
        headers: {
          'Content-Type': 'application/json',
          'Cache-Control': `max-age=${maxAge}`,
          [EXPIRES_HEADER]: String(entry.expiresAt),
        },
      }),
    )
  } catch {
    // Kept in this isolate anyway.
  }
  return keys
}

function providerUnavailable(): ApiError {
  return new ApiError(503, 'service_unavailable', 'The sign-in provider cannot be reached right now.', {
    headers: { 'Retry-After': RETRY_AFTER_SECONDS },
  })
}

function asKeySet(body: unknown): JSONWebKeySet | undefined {
  if (typeof body !== 'object' || body === null) return undefined
  const { keys } = body as { keys?: unknown }
  if (!Array.isArray(keys) || !keys.every((key) => typeof key === 'object' && key !== null && !Array.isArray(key)))
    return undefined
  return { keys: keys as JSONWebKeySet['keys'] }
}

/** The response's max-age, clamped; the default when it gives none. */
export function maxAgeOf(cacheControl: string | null): number {
  const match = /(?:^|[,\s])max-age\s*=\s*"?(\d+)"?/i.exec(cacheControl ?? '')
  const seconds = match === null ? DEFAULT_MAX_AGE_SECONDS : Number(match[1])
  return Math.min(MAX_MAX_AGE_SECONDS, Math.max(MIN_MAX_AGE_SECONDS, seconds))
}
