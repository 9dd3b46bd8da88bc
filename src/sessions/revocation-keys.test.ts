import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { getConfig } from '../config'
import { ApiError } from '../lib/api-error'
import { DependencyUnavailable } from '../lib/outages'
import {
  REVOCATION_FILTER_KEY,
  decodeRevocationFilter,
  encodeRevocationFilter,
  fingerprintOf,
} from './revocation-filter'
import { PUBLISH_INTERVAL_MS } from './revocation-publisher'
import type { RevocationPublisher } from './revocation-publisher'
import {
  assertSessionNotRevoked,
  isSessionRevoked,
  publisherOf,
  revocationStoreOf,
  revokeSessionKeys,
} from './revocation-keys'
import type { RevocationStore } from './revocation-keys'

// The three places a revocation is kept (revocation-keys.ts): the exact key, the shared filter
// the RevocationPublisher writes, and this location's marker. "Another location" is a store
// without markers: it learns of a revocation only from the filter and the exact key.

const publisher = (): DurableObjectStub<RevocationPublisher> => publisherOf(env.REVOCATIONS)

/**
 * Runs the publisher's pending alarm now (whenever it was due) and answers the copy it wrote: every
 * record so far. Read from the publisher, not from KV: the suite's two workers each run their own
 * publisher over one KV namespace (a deployment has one), so the key may hold the other's copy.
 */
async function publishNow(): Promise<ArrayBuffer> {
  await runDurableObjectAlarm(publisher())
  return publisher().currentCopy()
}

/**
 * REVOKED_TOKENS that records the keys read through it; `filter`, when given, is what it answers
 * for the shared filter's key (null: none published).
 */
function readingKv(filter?: ArrayBuffer | null): { kv: KVNamespace; reads: string[] } {
  const reads: string[] = []
  const real = env.REVOKED_TOKENS
  const kv = new Proxy(real, {
    get(target, property) {
      if (property === 'get')
        return (key: string, options: unknown) => {
          reads.push(key)
          if (key === REVOCATION_FILTER_KEY && filter !== undefined) return Promise.resolve(filter)
          return target.get(key, options as KVNamespaceGetOptions<'text'>)
        }
      const value = Reflect.get(target, property, target) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  }) as KVNamespace
  return { kv, reads }
}

const elsewhere = (overrides: Partial<RevocationStore> = {}): RevocationStore =>
  revocationStoreOf(env, { markers: undefined, ...overrides })
const here = (): RevocationStore => revocationStoreOf(env)
const inFiveMinutes = () => Math.floor(Date.now() / 1000) + 300

async function revoke(store: RevocationStore, sids: string[]): Promise<void> {
  const lastTokenExpiresAt = inFiveMinutes()
  await revokeSessionKeys(
    store,
    sids.map((sid) => ({ sid, lastTokenExpiresAt })),
    'test',
    new Date(),
  )
}

describe('the revocation filter', () => {
  it('finds exactly the fingerprints it was built from, whatever their order', () => {
    const sids = Array.from({ length: 500 }, () => crypto.randomUUID())
    const filter = decodeRevocationFilter(encodeRevocationFilter([...sids, ...sids].map(fingerprintOf), new Date(5)))
    expect(filter?.size).toBe(500)
    expect(filter?.publishedAt.getTime()).toBe(5)
    expect(sids.every((sid) => filter?.mayHold(sid))).toBe(true)
    const strangers = Array.from({ length: 500 }, () => crypto.randomUUID())
    expect(strangers.filter((sid) => filter?.mayHold(sid)).length).toBe(0)
  })

  it('refuses bytes that are not a filter (then the exact keys are read)', () => {
    expect(decodeRevocationFilter(new ArrayBuffer(3))).toBeUndefined()
    const truncated = encodeRevocationFilter([1, 2, 3], new Date()).slice(0, 20)
    expect(decodeRevocationFilter(truncated)).toBeUndefined()
    expect(
      decodeRevocationFilter(new TextEncoder().encode('not a filter, just text!').buffer as ArrayBuffer),
    ).toBeUndefined()
  })

  it('costs 4 bytes per revoked session on a 16-byte header', () => {
    expect(encodeRevocationFilter([], new Date()).byteLength).toBe(16)
    expect(encodeRevocationFilter([1, 2, 3, 4, 5], new Date()).byteLength).toBe(36)
  })
})

describe('revocation through the filter, seen from another location', () => {
  it('refuses a revoked session once the filter is published, reading the exact key only then', async () => {
    const sid = crypto.randomUUID()
    await revoke(elsewhere(), [sid])
    const { kv, reads } = readingKv(await publishNow())
    expect(await isSessionRevoked(elsewhere({ kv }), sid, 60)).toBe(true)
    expect(reads).toEqual([REVOCATION_FILTER_KEY, `sid:${sid}`])
  })

  it('admits a session that is not revoked with one read, of the shared filter', async () => {
    await revoke(elsewhere(), [crypto.randomUUID()])
    const { kv, reads } = readingKv(await publishNow())
    expect(await isSessionRevoked(elsewhere({ kv }), crypto.randomUUID(), 60)).toBe(false)
    expect(reads).toEqual([REVOCATION_FILTER_KEY])
  })

  it('admits a session whose fingerprint the filter holds but which was never revoked', async () => {
    const sid = crypto.randomUUID()
    // A filter exactly as the publisher writes it, holding this live session's fingerprint.
    const { kv, reads } = readingKv(encodeRevocationFilter([fingerprintOf(sid)], new Date()))
    const store = elsewhere({ kv })
    expect(await isSessionRevoked(store, sid, 60)).toBe(false)
    expect(reads).toEqual([REVOCATION_FILTER_KEY, `sid:${sid}`])
  })

  it('falls back to the exact key when no filter has been published', async () => {
    const sid = crypto.randomUUID()
    await revoke(elsewhere(), [sid])
    const { kv: withoutFilter } = readingKv(null)
    expect(await isSessionRevoked(elsewhere({ kv: withoutFilter }), sid, 60)).toBe(true)
    expect(await isSessionRevoked(elsewhere({ kv: withoutFilter }), crypto.randomUUID(), 60)).toBe(false)
  })

  it('answers 503 with Retry-After when the filter cannot be read', async () => {
    const down = {
      get: () => Promise.reject(new Error('KV GET failed: 500 Internal Server Error')),
    } as unknown as KVNamespace
    const refused = await assertSessionNotRevoked(elsewhere({ kv: down }), crypto.randomUUID(), 60).catch((e) => e)
    expect(refused).toBeInstanceOf(ApiError)
    expect(refused).toMatchObject({ status: 503, code: 'service_unavailable' })
    expect((refused as ApiError).extra.headers).toMatchObject({ 'Retry-After': '5' })
  })

  it('sees a burst of 1,000 revocations in one second, published together within the interval', async () => {
    const sids = Array.from({ length: 1000 }, () => crypto.randomUUID())
    const started = Date.now()
    const answers = await Promise.all(
      sids.map((sid) =>
        publisher()
          .record([{ sid, until: inFiveMinutes() }])
          .then((a) => ({ ...a, at: Date.now() })),
      ),
    )
    const finished = Date.now()
    // Every revocation is in a copy written at most one interval after it was recorded, and the
    // copies the burst asked for are spaced an interval apart: KV sees ≤ 1 write a second however
    // long the burst took on this machine (one copy due, plus one per interval it lasted).
    for (const { publishAt, at } of answers) expect(publishAt).toBeLessThanOrEqual(at + PUBLISH_INTERVAL_MS)
    const copies = new Set(answers.map((a) => a.publishAt)).size
    expect(copies).toBeLessThanOrEqual(2 + Math.floor((finished - started) / PUBLISH_INTERVAL_MS))
    const filter = decodeRevocationFilter(await publishNow())
    expect(sids.filter((sid) => !filter?.mayHold(sid))).toEqual([])
  })

  it('refuses, from another location, every one of 1,000 sessions revoked at once, after one copy', async () => {
    const sids = Array.from({ length: 1000 }, () => crypto.randomUUID())
    const lastTokenExpiresAt = inFiveMinutes()
    await Promise.all(
      sids.map((sid) => revokeSessionKeys(elsewhere(), [{ sid, lastTokenExpiresAt }], 'burst', new Date())),
    )
    const { kv } = readingKv(await publishNow())
    const refused = await Promise.all(sids.map((sid) => isSessionRevoked(elsewhere({ kv }), sid, 60)))
    expect(refused.filter((revoked) => !revoked)).toEqual([])
  })
})

describe('revocation at the location that revoked', () => {
  it('refuses at once, before the filter is published', async () => {
    const sid = crypto.randomUUID()
    await revoke(here(), [sid])
    // The copy this location holds predates the revocation; the marker answers.
    const { kv, reads } = readingKv(encodeRevocationFilter([], new Date()))
    expect(await isSessionRevoked(revocationStoreOf(env, { kv }), sid, 60)).toBe(true)
    expect(reads).toEqual([REVOCATION_FILTER_KEY])
  })

  it('marks nothing here when the publisher cannot be reached (the request fails with 503, to retry)', async () => {
    const sid = crypto.randomUUID()
    const unreachable = {
      idFromName: () => {
        throw new Error('Durable Object is overloaded')
      },
    } as unknown as DurableObjectNamespace
    const failed = await revoke(revocationStoreOf(env, { publisher: unreachable }), [sid]).catch((e) => e)
    expect(failed).toBeInstanceOf(DependencyUnavailable)
    // The marker was not written: only the exact key (written alongside) says revoked, and the
    // publisher never heard of it. The retry completes it.
    const { kv, reads } = readingKv(encodeRevocationFilter([], new Date()))
    expect(await isSessionRevoked(revocationStoreOf(env, { kv }), sid, 60)).toBe(false)
    expect(reads).toEqual([REVOCATION_FILTER_KEY])
    await revoke(here(), [sid])
    expect(await isSessionRevoked(revocationStoreOf(env, { kv }), sid, 60)).toBe(true)
  })

  it('records nothing with the publisher before the request is admitted (a revoked token, a spent write limit)', async () => {
    const recorded: unknown[] = []
    const recording = {
      idFromName: (name: string) => name,
      get: () => ({ record: async (entries: unknown[]) => recorded.push(...entries) }),
    } as unknown as DurableObjectNamespace
    const refused = Promise.reject(new ApiError(401, 'token_revoked', 'The token has been revoked.'))
    refused.catch(() => undefined)
    const store = revocationStoreOf(env, { publisher: recording, gate: { ready: refused } })
    await expect(revoke(store, [crypto.randomUUID()])).rejects.toMatchObject({ code: 'token_revoked' })
    expect(recorded).toEqual([])
  })

  it('cannot revoke without the publisher bound (a filter missing revocations would admit them)', async () => {
    await expect(revoke(revocationStoreOf(env, { publisher: undefined }), [crypto.randomUUID()])).rejects.toThrow(
      /REVOCATIONS is not bound/,
    )
  })
})

describe('revocation keys in KV', () => {
  it('revokes a session until its last token expires, never below KV’s 60 s minimum', async () => {
    const now = new Date()
    const nowSeconds = Math.floor(now.getTime() / 1000)
    const sid = crypto.randomUUID()
    const shortSid = crypto.randomUUID()
    await revokeSessionKeys(
      elsewhere(),
      [
        { sid, lastTokenExpiresAt: nowSeconds + 3_600 },
        { sid: shortSid, lastTokenExpiresAt: nowSeconds + 5 },
      ],
      'test',
      now,
    )
    // Listed by the whole key: a list of every `sid:` key stops at 1 000, and other tests of this
    // file (the burst) write more than that.
    const expiry = async (name: string) => {
      const { keys } = await env.REVOKED_TOKENS.list({ prefix: name })
      return keys.find((key) => key.name === name)?.expiration ?? 0
    }
    expect(await expiry(`sid:${sid}`)).toBeGreaterThanOrEqual(nowSeconds + 3_600)
    expect(await expiry(`sid:${sid}`)).toBeLessThanOrEqual(nowSeconds + 3_602)
    expect(await expiry(`sid:${shortSid}`)).toBeGreaterThanOrEqual(nowSeconds + 60)
  })

  it('reads with the configured cacheTtl (bounding how long a location may miss a revocation)', async () => {
    const seen: unknown[] = []
    const recordingKv = {
      get: async (key: string, options: unknown) => {
        seen.push([key, options])
        return null
      },
    } as unknown as KVNamespace
    await isSessionRevoked(elsewhere({ kv: recordingKv }), 'abc', 30)
    expect(seen).toEqual([
      [REVOCATION_FILTER_KEY, { type: 'arrayBuffer', cacheTtl: 30 }],
      ['sid:abc', { cacheTtl: 30 }],
    ])
  })
})

const { accessTtlSeconds, leewaySeconds } = getConfig(env).tokens
const window = accessTtlSeconds + leewaySeconds

describe('the first copy of the filter', () => {
  it('is asked for, once a minute, by a check that finds none; until then the exact key answers', async () => {
    const sid = crypto.randomUUID()
    await revoke(elsewhere(), [sid])
    const asked: Promise<unknown>[] = []
    const { kv } = readingKv(null)
    // A namespace of its own, so that no other check of this isolate has asked for it already.
    const seen: string[] = []
    const publisher = {
      idFromName: (name: string) => {
        seen.push(name)
        return env.REVOCATIONS.idFromName(`first-copy-${crypto.randomUUID()}`)
      },
      get: (id: DurableObjectId) => env.REVOCATIONS.get(id),
    } as unknown as DurableObjectNamespace
    const store = elsewhere({ kv, publisher, afterResponse: (work) => asked.push(work) })
    expect(await isSessionRevoked(store, sid, 60)).toBe(true)
    expect(await isSessionRevoked(store, crypto.randomUUID(), 60)).toBe(false)
    expect(asked).toHaveLength(1)
    await Promise.all(asked)
    expect(seen).toEqual(['sessions'])
  })

  it('holds the sessions revoked before the filter existed (their sid: keys), for the access-token lifetime', async () => {
    // A revocation written the way a deployment without the filter wrote it: the exact key only.
    const sid = crypto.randomUUID()
    await env.REVOKED_TOKENS.put(`sid:${sid}`, 'logout', { expirationTtl: 86_400 })
    const fresh = (env.REVOCATIONS as unknown as DurableObjectNamespace<RevocationPublisher>).get(
      env.REVOCATIONS.idFromName(`seeded-${crypto.randomUUID()}`),
    )
    const before = Math.floor(Date.now() / 1000)
    await fresh.ensurePublished()
    // Its copy holds every live exact key, so it is a superset of what the one publisher holds.
    // The alarm may already be running on its own (runDurableObjectAlarm then returns at once):
    // wait for the copy to be made, which happens once the seeding is done.
    await runDurableObjectAlarm(fresh)
    while ((await fresh.lastPublished()) === undefined) await scheduler.wait(10)
    const copy = decodeRevocationFilter(await fresh.currentCopy())
    expect(copy?.mayHold(sid)).toBe(true)
    const held = await runInDurableObject(fresh, (_object, state) =>
      state.storage.sql.exec<{ until: number }>('SELECT until FROM revoked WHERE sid = ?', sid).toArray(),
    )
    expect(held[0]?.until).toBeGreaterThanOrEqual(before + window)
    expect(held[0]?.until).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + window)
    // A second ask finds a copy published and changes nothing.
    const published = await fresh.lastPublished()
    expect(published).toBeDefined()
    await fresh.ensurePublished()
    expect(await fresh.lastPublished()).toBe(published)
  })
})
