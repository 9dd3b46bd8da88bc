import { Hono } from 'hono'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { MockInstance } from 'vitest'
import { onError } from '../errors'
import { ApiError } from '../lib/api-error'
import type { AppEnv } from '../router'
import { maxAgeOf, providerKeySet } from './provider-keys'
import { BASE_URL, expectProblem } from '../../test/helpers'
import { PROVIDER_ORIGIN, publicJwk } from '../../test/oidc-provider'

// The JWKS of sign-in providers (src/http/provider-keys.ts), fetched from the fake provider of
// test/oidc-provider.ts, which vitest.config.ts serves as the worker's whole outbound network:
// /apple/keys answers apple-1 with max-age=3600, /down/keys 503, /garbled/keys HTML, any other
// origin 502.
//
// Every test asks for its own URI (a query the provider ignores), so the per-isolate cache, the
// Cache API copy and the refetch cooldown start empty for it. Fetches are counted by a spy on the
// worker's fetch, never by the provider's shared hit counter, which other files reset and read.
// Times are passed in (`now`), never read from the clock.

const T0 = Date.UTC(2031, 0, 1)
const SECOND = 1000
const at = (ms: number) => new Date(T0 + ms)

const APPLE_KEYS = { keys: [publicJwk('apple-1')] }
const STRANGER_KEYS = { keys: [publicJwk('stranger-1')] }

/** The header the module stores a set's expiry in on its Cache API copy. */
const EXPIRES_HEADER = 'X-Edgepress-Expires-At'

function uniqueUri(path = '/apple/keys'): string {
  return `${PROVIDER_ORIGIN}${path}?test=${crypto.randomUUID()}`
}

let fetchSpy: MockInstance<typeof fetch>

beforeEach(() => {
  fetchSpy = vi.spyOn(globalThis, 'fetch')
})

afterEach(() => {
  vi.restoreAllMocks()
})

function fetchesOf(uri: string): number {
  return fetchSpy.mock.calls.filter(([input]) => String(input) === uri).length
}

/** A copy in the Cache API as another isolate would have stored it. */
async function storeCopy(uri: string, body: unknown, expiresAt: number | undefined): Promise<void> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Cache-Control': 'max-age=3600' }
  if (expiresAt !== undefined) headers[EXPIRES_HEADER] = String(expiresAt)
  await caches.default.put(uri, new Response(JSON.stringify(body), { headers }))
}

async function outage(promise: Promise<unknown>): Promise<ApiError> {
  const error = await promise.then(
    () => undefined,
    (err: unknown) => err,
  )
  expect(error).toBeInstanceOf(ApiError)
  return error as ApiError
}

describe('maxAgeOf', () => {
  it("reads the response's max-age", () => {
    expect(maxAgeOf('max-age=120')).toBe(120)
    expect(maxAgeOf('public, max-age=7200, must-revalidate')).toBe(7200)
    expect(maxAgeOf('public,max-age=600')).toBe(600)
    expect(maxAgeOf('MAX-AGE=300')).toBe(300)
    expect(maxAgeOf('max-age="900"')).toBe(900)
    expect(maxAgeOf('max-age = 240')).toBe(240)
  })

  it('clamps it to between a minute and a day', () => {
    expect(maxAgeOf('max-age=0')).toBe(60)
    expect(maxAgeOf('max-age=59')).toBe(60)
    expect(maxAgeOf('max-age=60')).toBe(60)
    expect(maxAgeOf('max-age=86400')).toBe(86_400)
    expect(maxAgeOf('max-age=31536000')).toBe(86_400)
  })

  it('is an hour when the response gives none', () => {
    for (const header of [null, '', 'public', 'no-store', 'no-cache', 's-maxage=100', 'x-max-age=5', 'max-age=soon']) {
      expect(maxAgeOf(header), String(header)).toBe(3600)
    }
  })
})

describe('providerKeySet: caching', () => {
  it('fetches the set once and serves it from the isolate for its max-age', async () => {
    const uri = uniqueUri()
    const first = await providerKeySet(uri, false, at(0))
    expect(first).toEqual(APPLE_KEYS)

    expect(await providerKeySet(uri, false, at(1 * SECOND))).toBe(first)
    expect(await providerKeySet(uri, false, at(3599 * SECOND))).toBe(first)
    expect(fetchesOf(uri)).toBe(1)
  })

  it('fetches it again once the max-age has passed', async () => {
    const uri = uniqueUri()
    await providerKeySet(uri, false, at(0))
    expect(await providerKeySet(uri, false, at(3600 * SECOND))).toEqual(APPLE_KEYS)
    expect(fetchesOf(uri)).toBe(2)
  })

  it('keeps a copy in the Cache API, with its expiry', async () => {
    const uri = uniqueUri()
    await providerKeySet(uri, false, at(0))

    const copy = await caches.default.match(uri)
    expect(copy).toBeDefined()
    expect(copy!.headers.get(EXPIRES_HEADER)).toBe(String(T0 + 3600 * SECOND))
    expect(copy!.headers.get('cache-control')).toBe('max-age=3600')
    expect(await copy!.json()).toEqual(APPLE_KEYS)
  })

  it('serves the Cache API copy another isolate stored, without asking the provider', async () => {
    const uri = uniqueUri()
    await storeCopy(uri, STRANGER_KEYS, T0 + 60 * SECOND)

    expect(await providerKeySet(uri, false, at(0))).toEqual(STRANGER_KEYS)
    // Kept in this isolate from then on, until the copy's expiry.
    expect(await providerKeySet(uri, false, at(59 * SECOND))).toEqual(STRANGER_KEYS)
    expect(fetchesOf(uri)).toBe(0)
    expect(await providerKeySet(uri, false, at(60 * SECOND))).toEqual(APPLE_KEYS)
    expect(fetchesOf(uri)).toBe(1)
  })

  it('ignores a Cache API copy that has expired, has no expiry or is not a key set', async () => {
    const copies: [unknown, number | undefined][] = [
      [STRANGER_KEYS, T0],
      [STRANGER_KEYS, undefined],
      [{ keys: 'not a list' }, T0 + 60 * SECOND],
      [{ keys: [1, 2] }, T0 + 60 * SECOND],
      ['just text', T0 + 60 * SECOND],
    ]
    for (const [body, expiresAt] of copies) {
      const uri = uniqueUri()
      await storeCopy(uri, body, expiresAt)
      expect(await providerKeySet(uri, false, at(0)), JSON.stringify(body)).toEqual(APPLE_KEYS)
      expect(fetchesOf(uri)).toBe(1)
    }
  })
})

describe('providerKeySet: forced refetch (a kid the cached set lacks)', () => {
  it('asks the provider again, bypassing both caches', async () => {
    const uri = uniqueUri()
    await storeCopy(uri, STRANGER_KEYS, T0 + 3600 * SECOND)
    expect(await providerKeySet(uri, false, at(0))).toEqual(STRANGER_KEYS)

    expect(await providerKeySet(uri, true, at(1 * SECOND))).toEqual(APPLE_KEYS)
    expect(fetchesOf(uri)).toBe(1)
    // What it fetched replaces the cached set.
    expect(await providerKeySet(uri, false, at(2 * SECOND))).toEqual(APPLE_KEYS)
    expect(await (await caches.default.match(uri))!.json()).toEqual(APPLE_KEYS)
  })

  it('at most once per 30 seconds: within the cooldown the cached set is served', async () => {
    const uri = uniqueUri()
    await providerKeySet(uri, true, at(0))
    expect(fetchesOf(uri)).toBe(1)

    for (const seconds of [1, 10, 29.999]) {
      expect(await providerKeySet(uri, true, at(seconds * SECOND))).toEqual(APPLE_KEYS)
    }
    expect(fetchesOf(uri)).toBe(1)

    await providerKeySet(uri, true, at(30 * SECOND))
    expect(fetchesOf(uri)).toBe(2)
  })

  it('fetches again when the clock has gone back since the last forced fetch', async () => {
    const uri = uniqueUri()
    await providerKeySet(uri, true, at(60 * SECOND))
    await providerKeySet(uri, true, at(30 * SECOND))
    expect(fetchesOf(uri)).toBe(2)
  })

  it('a failed forced refetch keeps the cached set and still counts for the cooldown', async () => {
    const uri = uniqueUri()
    const cached = await providerKeySet(uri, false, at(0))
    fetchSpy.mockRejectedValueOnce(new TypeError('network connection lost'))

    await outage(providerKeySet(uri, true, at(1 * SECOND)))

    expect(await providerKeySet(uri, false, at(2 * SECOND))).toBe(cached)
    expect(await providerKeySet(uri, true, at(3 * SECOND))).toBe(cached)
    expect(fetchesOf(uri)).toBe(2)
  })
})

describe('providerKeySet: provider outage', () => {
  it('is a 503 service_unavailable with Retry-After, whatever went wrong', async () => {
    const uris = [
      uniqueUri('/down/keys'),
      uniqueUri('/garbled/keys'),
      uniqueUri('/no-such-provider/keys'),
      `https://keys.example/jwks?test=${crypto.randomUUID()}`,
    ]
    for (const uri of uris) {
      const error = await outage(providerKeySet(uri, false, at(0)))
      expect(error.status, uri).toBe(503)
      expect(error.code, uri).toBe('service_unavailable')
      expect(error.extra.headers, uri).toEqual({ 'Retry-After': '30' })
    }
  })

  it('is not cached: the next request asks the provider again', async () => {
    const uri = uniqueUri('/down/keys')
    await outage(providerKeySet(uri, false, at(0)))
    await outage(providerKeySet(uri, false, at(1 * SECOND)))
    expect(fetchesOf(uri)).toBe(2)
    expect(await caches.default.match(uri)).toBeUndefined()
  })

  it('reaches the client as a problem+json 503 with Retry-After', async () => {
    const uri = uniqueUri('/down/keys')
    const app = new Hono<AppEnv>()
    app.get('/sign-in', async (c) => c.json(await providerKeySet(uri, false)))
    app.onError(onError)
    vi.spyOn(console, 'error').mockImplementation(() => undefined)

    const res = await app.request(`${BASE_URL}/sign-in`)

    const problem = await expectProblem(res, 503, 'service_unavailable')
    expect(problem.detail).toBe('The sign-in provider cannot be reached right now.')
    expect(res.headers.get('retry-after')).toBe('30')
  })
})
