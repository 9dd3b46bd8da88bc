import { env } from 'cloudflare:workers'
import { exportJWK, generateKeyPair } from 'jose'
import { Hono } from 'hono'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { MockInstance } from 'vitest'
import type { Env } from '../config'
import { onError } from '../errors'
import type { TokenKeys } from '../lib/token-keys'
import type { AppEnv } from '../router'
import { withConfig } from './config'
import { withTokenKeys } from './token-keys'
import { BASE_URL, expectProblem, uniqueName } from '../../test/helpers'

// withTokenKeys() (src/middleware/token-keys.ts) on a tiny app whose route hands the test the
// `c.var.tokenKeys` it was given. Keys are memoised per configuration object, and the
// configuration per env object, so each test builds its own env objects: a new one is what a
// redeploy looks like.

let seen: TokenKeys[] = []

const app = new Hono<AppEnv>()
app.use(withConfig(), withTokenKeys())
app.get('/', (c) => {
  seen.push(c.var.tokenKeys)
  return c.body(null, 204)
})
app.onError(onError)

function freshEnv(vars: Partial<Record<keyof Env, string>> = {}): Env {
  return { ...env, ...vars } as Env
}

function request(workerEnv: Env): Promise<Response> {
  return Promise.resolve(app.request(`${BASE_URL}/`, {}, workerEnv))
}

async function keysUnder(workerEnv: Env): Promise<TokenKeys> {
  seen = []
  const res = await request(workerEnv)
  expect(res.status, await res.clone().text()).toBe(204)
  return seen[0]!
}

let importKey: MockInstance<SubtleCrypto['importKey']>

beforeEach(() => {
  importKey = vi.spyOn(crypto.subtle, 'importKey')
  // onError logs every 500.
  vi.spyOn(console, 'error').mockImplementation(() => undefined)
})

afterEach(() => {
  vi.restoreAllMocks()
})

async function ed25519Jwk(kid: string): Promise<Record<string, unknown>> {
  const { privateKey } = await generateKeyPair('EdDSA', { extractable: true })
  return { ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' }
}

describe('importing once', () => {
  it('imports the keys on the first request of a configuration and reuses them after', async () => {
    const workerEnv = freshEnv()
    const first = await keysUnder(workerEnv)
    expect(importKey).toHaveBeenCalledTimes(1)

    const second = await keysUnder(workerEnv)
    const third = await keysUnder(workerEnv)
    expect(importKey).toHaveBeenCalledTimes(1)
    expect(second).toBe(first)
    expect(third).toBe(first)
  })

  it('shares one import between concurrent first requests', async () => {
    const workerEnv = freshEnv()
    seen = []
    const statuses = (await Promise.all([request(workerEnv), request(workerEnv), request(workerEnv)])).map(
      (res) => res.status,
    )
    expect(statuses).toEqual([204, 204, 204])
    expect(importKey).toHaveBeenCalledTimes(1)
    expect(new Set(seen).size).toBe(1)
  })

  it('imports again for a new configuration object; the same secret keeps its kid', async () => {
    const before = await keysUnder(freshEnv())
    const redeployed = await keysUnder(freshEnv())
    expect(redeployed).not.toBe(before)
    expect(redeployed.kid).toBe(before.kid)
    expect(importKey).toHaveBeenCalledTimes(2)

    const rotated = await keysUnder(freshEnv({ JWT_SECRET: `${env.JWT_SECRET}-rotated` }))
    expect(rotated.kid).not.toBe(before.kid)
  })

  it('publishes the configured algorithm and token settings', async () => {
    const keys = await keysUnder(freshEnv({ ACCESS_TOKEN_TTL: '120', JWT_ISSUER: 'https://issuer.example' }))
    expect(keys).toMatchObject({
      alg: 'HS256',
      accessTtlSeconds: 120,
      issuer: 'https://issuer.example',
      publicJwks: { keys: [] },
    })
    expect(keys.kid).toMatch(/^hs256-[A-Za-z0-9_-]{12}$/)
  })
})

describe('a failed import', () => {
  it('is not kept: the next request with the same configuration imports again and succeeds', async () => {
    const workerEnv = freshEnv()
    importKey.mockRejectedValueOnce(new Error('the import failed once'))

    await expectProblem(await request(workerEnv), 500, 'internal_error')
    const keys = await keysUnder(workerEnv)

    expect(importKey).toHaveBeenCalledTimes(2)
    expect(keys.alg).toBe('HS256')
  })

  it('of a key that cannot be imported is tried again on every request, not answered from a memo', async () => {
    // Passes the shape checks of src/lib/token-keys.ts, then WebCrypto refuses its bytes.
    const corrupt = JSON.stringify({ kty: 'OKP', crv: 'Ed25519', kid: 'corrupt', x: 'AAAA', d: 'AAAA' })
    const workerEnv = freshEnv({ JWT_ALG: 'EdDSA', JWT_PRIVATE_JWK: corrupt })

    await expectProblem(await request(workerEnv), 500, 'internal_error')
    const afterFirst = importKey.mock.calls.length
    await expectProblem(await request(workerEnv), 500, 'internal_error')

    expect(afterFirst).toBeGreaterThan(0)
    expect(importKey.mock.calls.length).toBe(2 * afterFirst)
  })

  it('of a malformed JWT_PRIVATE_JWK answers 500 naming it, never its value; a good key then works', async () => {
    const bad = freshEnv({ JWT_ALG: 'EdDSA', JWT_PRIVATE_JWK: '{"kty":"OKP","d":"secret-looking-value"' })
    const problem = await expectProblem(await request(bad), 500, 'internal_error')
    expect(problem.detail).toContain('JWT_PRIVATE_JWK is not a JSON object.')
    expect(problem.detail).not.toContain('secret-looking-value')

    const kid = uniqueName('ed')
    const good = freshEnv({ JWT_ALG: 'EdDSA', JWT_PRIVATE_JWK: JSON.stringify(await ed25519Jwk(kid)) })
    const keys = await keysUnder(good)
    expect(keys).toMatchObject({ alg: 'EdDSA', kid })
    expect(keys.publicJwks.keys).toHaveLength(1)
    expect(keys.publicJwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid, alg: 'EdDSA', use: 'sig' })
    expect(keys.publicJwks.keys[0]).not.toHaveProperty('d')
  })

  it('of a key of the wrong family answers 500 naming JWT_PRIVATE_JWK', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const es256 = { ...(await exportJWK(privateKey)), kid: uniqueName('es') }
    const workerEnv = freshEnv({ JWT_ALG: 'EdDSA', JWT_PRIVATE_JWK: JSON.stringify(es256) })
    const problem = await expectProblem(await request(workerEnv), 500, 'internal_error')
    expect(problem.detail).toContain('JWT_PRIVATE_JWK must be a private Ed25519 key for JWT_ALG=EdDSA.')
  })
})
