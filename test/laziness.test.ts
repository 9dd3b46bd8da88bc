import { OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi'
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { SignJWT, exportJWK, generateKeyPair } from 'jose'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createApp } from '../src/app'
import worker from '../src/index'
import { BASE_URL, registerAndLogin, registerUser } from './helpers'

// Work that belongs to start-up or to the first request of an isolate must not be repeated on
// every request: key import (config and keys are memoised per env object, src/config.ts, src/middleware/token-keys.ts)
// and OpenAPI document generation (src/routes/openapi.ts). scripts/checks/budget.ts checks the other
// side: none of it runs at start-up.

type WorkerEnv = typeof env & { JWT_ALG?: string; JWT_PRIVATE_JWK?: string; JWT_PUBLIC_JWKS?: string }

async function call(workerEnv: WorkerEnv, path: string, token?: string): Promise<Response> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
  const ctx = createExecutionContext()
  const res = await worker.fetch(new Request(`${BASE_URL}${path}`, { headers }), workerEnv, ctx)
  await waitOnExecutionContext(ctx)
  return res
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('key import happens once per configuration, not per request', () => {
  async function expectImportsOnlyOnFirstRequest(workerEnv: WorkerEnv, token: string): Promise<void> {
    const importKey = vi.spyOn(crypto.subtle, 'importKey')

    const first = await call(workerEnv, '/api/v1/users/me', token)
    expect(first.status).toBe(200)
    // A fresh env object has no keys yet: the first request imports them (this also proves the
    // spy sees the worker's calls, so the zero below means something).
    expect(importKey).toHaveBeenCalled()
    importKey.mockClear()

    for (let i = 0; i < 5; i += 1) {
      const res = await call(workerEnv, '/api/v1/users/me', token)
      expect(res.status).toBe(200)
    }
    expect(importKey).not.toHaveBeenCalled()
  }

  it('HS256: the next 5 authenticated requests import no key', async () => {
    const { tokens } = await registerAndLogin()
    await expectImportsOnlyOnFirstRequest({ ...env }, tokens.access_token)
  })

  it('EdDSA: the next 5 authenticated requests import no key (signing or verification)', async () => {
    const user = await registerUser()
    const kid = 'laziness-eddsa'
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true })
    const workerEnv: WorkerEnv = {
      ...env,
      JWT_ALG: 'EdDSA',
      JWT_PRIVATE_JWK: JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' }),
      JWT_PUBLIC_JWKS: JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'EdDSA' }] }),
    }
    const now = Math.floor(Date.now() / 1000)
    const token = await new SignJWT({ token_type: 'access', sid: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid })
      .setSubject(String(user.id))
      .setJti(crypto.randomUUID())
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 300)
      .sign(privateKey)

    await expectImportsOnlyOnFirstRequest(workerEnv, token)
  })
})

describe('the OpenAPI document is generated at most once per isolate', () => {
  // OpenAPIHono's getOpenAPI31Document is an instance field (an arrow function), not a prototype
  // method, so the worker's own app cannot be spied through OpenAPIHono.prototype. The generator
  // it calls can: every document any app builds goes through OpenApiGeneratorV31#generateDocument.
  it('a fresh app builds the document on the first GET /openapi.json only', async () => {
    const app = createApp()
    const build = vi.spyOn(app, 'getOpenAPI31Document')
    const generate = vi.spyOn(OpenApiGeneratorV31.prototype, 'generateDocument')

    const bodies: string[] = []
    for (let i = 0; i < 4; i += 1) {
      const res = await app.fetch(new Request(`${BASE_URL}/openapi.json`), { ...env }, createExecutionContext())
      expect(res.status).toBe(200)
      bodies.push(await res.text())
    }

    expect(build).toHaveBeenCalledTimes(1)
    expect(generate).toHaveBeenCalledTimes(1)
    expect(new Set(bodies).size).toBe(1)
  })

  it("the worker's app generates it at most once across several requests", async () => {
    const generate = vi.spyOn(OpenApiGeneratorV31.prototype, 'generateDocument')
    for (let i = 0; i < 4; i += 1) {
      const res = await call(env, '/openapi.json')
      expect(res.status).toBe(200)
      expect(((await res.json()) as { openapi: string }).openapi).toBe('3.1.0')
    }
    expect(generate.mock.calls.length).toBeLessThanOrEqual(1)
  })
})
