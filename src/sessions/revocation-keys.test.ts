import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { isSessionRevoked, revokeSessionKeys } from './revocation-keys'

describe('revocation keys in KV', () => {
  it('revokes a session until its last token expires, never below KV’s 60 s minimum', async () => {
    const now = new Date()
    const nowSeconds = Math.floor(now.getTime() / 1000)
    const sid = crypto.randomUUID()
    const shortSid = crypto.randomUUID()
    await revokeSessionKeys(
      env.REVOKED_TOKENS,
      [
        { sid, lastTokenExpiresAt: nowSeconds + 3_600 },
        { sid: shortSid, lastTokenExpiresAt: nowSeconds + 5 },
      ],
      'test',
      now,
    )
    expect(await isSessionRevoked(env.REVOKED_TOKENS, sid, 60)).toBe(true)
    expect(await isSessionRevoked(env.REVOKED_TOKENS, crypto.randomUUID(), 60)).toBe(false)
    const { keys } = await env.REVOKED_TOKENS.list({ prefix: 'sid:' })
    const expiry = (name: string) => keys.find((key) => key.name === name)?.expiration ?? 0
    expect(expiry(`sid:${sid}`)).toBeGreaterThanOrEqual(nowSeconds + 3_600)
    expect(expiry(`sid:${sid}`)).toBeLessThanOrEqual(nowSeconds + 3_602)
    expect(expiry(`sid:${shortSid}`)).toBeGreaterThanOrEqual(nowSeconds + 60)
  })

  it('reads with the configured cacheTtl (bounding how long a location may miss a revocation)', async () => {
    const seen: unknown[] = []
    const recordingKv = {
      get: async (key: string, options: unknown) => {
        seen.push([key, options])
        return null
      },
    } as unknown as KVNamespace
    await isSessionRevoked(recordingKv, 'abc', 30)
    expect(seen).toEqual([['sid:abc', { cacheTtl: 30 }]])
  })
})
