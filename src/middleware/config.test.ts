import { env } from 'cloudflare:workers'
import { Hono } from 'hono'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { getConfig } from '../config'
import type { Config, Env } from '../config'
import { onError } from '../errors'
import type { AppEnv } from '../router'
import { withConfig } from './config'
import { BASE_URL, expectProblem } from '../../test/helpers'
import { TEST_PROVIDERS } from '../../test/oidc-provider'

// withConfig() (src/middleware/config.ts) and the parsing behind it (getConfig, src/config.ts) on a
// tiny app whose one route hands the test the `c.var.config` it was given. Every env here is its
// own object: the configuration is memoised per env object.

let seen: Config[] = []
let reached = false

const app = new Hono<AppEnv>()
app.use(withConfig())
app.get('/', (c) => {
  reached = true
  seen.push(c.var.config)
  return c.body(null, 204)
})
app.onError(onError)

function envWith(vars: Partial<Record<keyof Env, string>>): Env {
  return { ...env, ...vars } as Env
}

/** The configuration the route saw under `workerEnv`. */
async function configUnder(workerEnv: Env): Promise<Config> {
  seen = []
  const res = await app.request(`${BASE_URL}/`, {}, workerEnv)
  expect(res.status, await res.clone().text()).toBe(204)
  expect(seen).toHaveLength(1)
  return seen[0]!
}

/** The 500 problem a bad configuration answers with; the route must not run. */
async function misconfigured(workerEnv: Env): Promise<string> {
  reached = false
  const res = await app.request(`${BASE_URL}/`, {}, workerEnv)
  const problem = await expectProblem(res, 500, 'internal_error')
  expect(reached).toBe(false)
  expect(res.headers.get('cache-control')).toBe('no-store')
  return problem.detail
}

// onError logs every 500.
beforeEach(() => {
  vi.spyOn(console, 'error').mockImplementation(() => undefined)
})

afterEach(() => {
  vi.restoreAllMocks()
})

describe('c.var.config', () => {
  it("is the env's parsed configuration, the same object getConfig returns (the cron's)", async () => {
    const config = await configUnder(env)
    expect(config).toBe(getConfig(env))
    expect(config.tokens.secret).toEqual(new TextEncoder().encode(env.JWT_SECRET))
    expect(config.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:5173'])
  })

  it('is parsed once per env object: the same object on every request, a new one for a new env object', async () => {
    const workerEnv = envWith({})
    const first = await configUnder(workerEnv)
    const second = await configUnder(workerEnv)
    expect(second).toBe(first)

    const redeployed = await configUnder(envWith({}))
    expect(redeployed).not.toBe(first)
    expect(redeployed.tokens.accessTtlSeconds).toBe(first.tokens.accessTtlSeconds)
  })
})

describe('a bad configuration', () => {
  it('answers 500 naming the variable, never its value, and the route does not run', async () => {
    // The value is null where it is too short to look for in the detail.
    const cases: [Partial<Record<keyof Env, string>>, string, string | null][] = [
      [{ JWT_SECRET: 'short-secret-value' }, 'JWT_SECRET must be at least 32 bytes long.', 'short-secret-value'],
      [{ OIDC_PROVIDERS: '{"apple": {"issuers": ["secret-looking-value""' }, 'OIDC_PROVIDERS', 'secret-looking-value'],
      [{ OIDC_PROVIDERS: '{"apple": "secret-looking-value"}' }, 'OIDC_PROVIDERS', 'secret-looking-value'],
      [{ ACCESS_TOKEN_TTL: 'five minutes' }, 'ACCESS_TOKEN_TTL is invalid.', 'five minutes'],
      [{ ACCESS_TOKEN_TTL: '0' }, 'ACCESS_TOKEN_TTL is invalid.', null],
      [{ ACCESS_TOKEN_TTL: '1.5' }, 'ACCESS_TOKEN_TTL is invalid.', '1.5'],
      [{ ACCESS_TOKEN_TTL: '-300' }, 'ACCESS_TOKEN_TTL is invalid.', '-300'],
      [{ REVOCATION_CACHE_TTL: '29' }, 'REVOCATION_CACHE_TTL is invalid.', '29'],
      [{ COOKIE_SAMESITE: 'Sometimes' }, 'COOKIE_SAMESITE is invalid.', 'Sometimes'],
      [{ PUBLIC_BASE_URL: 'blog dot example' }, 'PUBLIC_BASE_URL is invalid.', 'blog dot example'],
      [{ MFA_ENCRYPTION_KEY: 'tiny-mfa-key' }, 'MFA_ENCRYPTION_KEY must be at least 32 bytes long.', 'tiny-mfa-key'],
    ]
    for (const [vars, named, value] of cases) {
      const detail = await misconfigured(envWith(vars))
      expect(detail, JSON.stringify(vars)).toContain(named)
      if (value !== null) expect(detail, JSON.stringify(vars)).not.toContain(value)
    }
  })

  it('says an unset or blank JWT_SECRET is not set, and how to set one', async () => {
    for (const secret of ['', '   ']) {
      const detail = await misconfigured(envWith({ JWT_SECRET: secret }))
      expect(detail).toContain('JWT_SECRET is not set.')
      expect(detail).toContain('wrangler secret put JWT_SECRET')
    }
  })

  it('names the variable a rule between variables needs', async () => {
    expect(await misconfigured(envWith({ JWT_ALG: 'EdDSA' }))).toContain('JWT_PRIVATE_JWK must be set')
    expect(await misconfigured(envWith({ MAIL_TRANSPORT: 'http' }))).toContain('MAIL_API_KEY must be set')
  })

  it('names every bad variable at once', async () => {
    const detail = await misconfigured(envWith({ ACCESS_TOKEN_TTL: 'x', COOKIE_SAMESITE: 'y' }))
    expect(detail).toContain('ACCESS_TOKEN_TTL is invalid.')
    expect(detail).toContain('COOKIE_SAMESITE is invalid.')
  })
})

describe('the passkey variables', () => {
  const ANDROID_HASH = `android:apk-key-hash:${'A'.repeat(43)}`

  it('default to PUBLIC_BASE_URL: its host is the RP id, its origin the one origin', async () => {
    const config = await configUnder(envWith({ PUBLIC_BASE_URL: 'https://blog.example.com/' }))
    expect(config.webauthn).toEqual({
      rpId: 'blog.example.com',
      origins: ['https://blog.example.com'],
      rpName: 'edgepress',
    })
    expect(config.appleAppIds).toBeUndefined()
    expect(config.androidApps).toBeUndefined()
  })

  it('take an RP id above the origins, web origins under it and Android apps', async () => {
    const config = await configUnder(
      envWith({
        WEBAUTHN_RP_ID: 'example.com',
        WEBAUTHN_RP_NAME: 'The Example Blog',
        WEBAUTHN_ORIGINS: ` https://example.com, https://app.example.com:8443 ,${ANDROID_HASH}`,
        APPLE_APP_IDS: 'ABCDE12345.com.example.blog',
        ANDROID_APPS: JSON.stringify([
          { package_name: 'com.example.blog', sha256_cert_fingerprints: [Array(32).fill('AB').join(':')] },
        ]),
      }),
    )
    expect(config.webauthn).toEqual({
      rpId: 'example.com',
      origins: ['https://example.com', 'https://app.example.com:8443', ANDROID_HASH],
      rpName: 'The Example Blog',
    })
    expect(config.appleAppIds).toEqual(['ABCDE12345.com.example.blog'])
    expect(config.androidApps).toHaveLength(1)
  })

  it('refuse malformed values, naming the variable', async () => {
    const fingerprint = Array(32).fill('AB').join(':')
    const cases: [Partial<Record<keyof Env, string>>, string][] = [
      [{ WEBAUTHN_RP_ID: 'https://example.com' }, 'WEBAUTHN_RP_ID must be a lower-case domain name'],
      [{ WEBAUTHN_RP_ID: 'example.com:443' }, 'WEBAUTHN_RP_ID must be a lower-case domain name'],
      [{ WEBAUTHN_RP_NAME: 'x'.repeat(65) }, 'WEBAUTHN_RP_NAME must be 1 to 64 characters.'],
      [{ WEBAUTHN_ORIGINS: 'http://blog.example.com' }, 'WEBAUTHN_ORIGINS: each entry must be'],
      [{ WEBAUTHN_ORIGINS: 'https://localhost:8787/path' }, 'WEBAUTHN_ORIGINS: each entry must be'],
      [{ WEBAUTHN_ORIGINS: 'android:apk-key-hash:short' }, 'WEBAUTHN_ORIGINS: each entry must be'],
      [{ WEBAUTHN_ORIGINS: ' , ' }, 'WEBAUTHN_ORIGINS lists nothing.'],
      // Browsers refuse an RP id that is not the origin's domain or one above it.
      [
        { WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://example.org' },
        'WEBAUTHN_ORIGINS: https://example.org is not on example.com',
      ],
      [
        { WEBAUTHN_RP_ID: 'app.example.com', WEBAUTHN_ORIGINS: 'https://example.com' },
        'WEBAUTHN_ORIGINS: https://example.com is not on app.example.com',
      ],
      [{ WEBAUTHN_RP_ID: 'example.com' }, 'WEBAUTHN_ORIGINS: http://localhost:8787 is not on example.com'],
      [{ APPLE_APP_IDS: 'com.example.blog' }, 'APPLE_APP_IDS: each entry must be TEAMID.bundle.id.'],
      [{ ANDROID_APPS: '{"package_name":"com.example.blog"}' }, 'ANDROID_APPS must be a JSON array'],
      [{ ANDROID_APPS: '[{"package_name":"com.example.blog","sha256_cert_fingerprints":["ab"]}]' }, 'ANDROID_APPS'],
      [
        { ANDROID_APPS: JSON.stringify([{ package_name: 'blog', sha256_cert_fingerprints: [fingerprint] }]) },
        'ANDROID_APPS',
      ],
    ]
    for (const [vars, named] of cases) {
      expect(await misconfigured(envWith(vars)), JSON.stringify(vars)).toContain(named)
    }
  })
})

describe('defaults and normalisation', () => {
  it('gives an unset or blank variable its default, and trims the others', async () => {
    for (const ttl of [undefined, '', '   ']) {
      const config = await configUnder(envWith({ ACCESS_TOKEN_TTL: ttl }))
      expect(config.tokens.accessTtlSeconds, JSON.stringify(ttl)).toBe(300)
    }
    expect((await configUnder(envWith({ ACCESS_TOKEN_TTL: ' 600 ' }))).tokens.accessTtlSeconds).toBe(600)
    expect((await configUnder(envWith({ JWT_ISSUER: '  https://issuer.example  ' }))).tokens.issuer).toBe(
      'https://issuer.example',
    )
  })

  it('applies the documented defaults', async () => {
    const config = await configUnder(
      envWith({ CORS_ORIGINS: undefined, LOG_REQUESTS: undefined, OIDC_PROVIDERS: undefined, MFA_ENCRYPTION_KEY: '' }),
    )
    expect(config.tokens).toMatchObject({
      alg: 'HS256',
      leewaySeconds: 5,
      accessTtlSeconds: 300,
      refreshTtlSeconds: 86_400,
      reuseGraceSeconds: 10,
      sessionMaxAgeSeconds: 30 * 86_400,
      revocationCacheTtlSeconds: 60,
      issuer: undefined,
      audience: undefined,
    })
    expect(config).toMatchObject({
      publicBaseUrl: 'http://localhost:8787',
      corsOrigins: [],
      cookieSameSite: 'Strict',
      logRequests: true,
      mfaEncryptionKey: undefined,
      mail: { transport: 'console', apiUrl: 'https://api.resend.com/emails' },
    })
    expect(config.oidcProviders.size).toBe(0)
  })

  it('removes trailing slashes from PUBLIC_BASE_URL', async () => {
    for (const [url, base] of [
      ['https://blog.example.com/', 'https://blog.example.com'],
      ['https://blog.example.com//', 'https://blog.example.com'],
      ['https://example.com/blog/', 'https://example.com/blog'],
    ]) {
      expect((await configUnder(envWith({ PUBLIC_BASE_URL: url }))).publicBaseUrl).toBe(base)
    }
  })

  it('splits CORS_ORIGINS on commas, trims each origin and drops empty ones', async () => {
    const config = await configUnder(envWith({ CORS_ORIGINS: ' https://a.example , ,https://b.example,' }))
    expect(config.corsOrigins).toEqual(['https://a.example', 'https://b.example'])
  })

  it('keeps JWT_SECRET exactly as given, blanks included: its bytes are the HS256 key', async () => {
    const secret = `  ${env.JWT_SECRET}\n`
    const config = await configUnder(envWith({ JWT_SECRET: secret }))
    expect(config.tokens.secret).toEqual(new TextEncoder().encode(secret))
  })

  it('measures JWT_SECRET in UTF-8 bytes, not characters', async () => {
    const sixteenTwoByteCharacters = 'é'.repeat(16)
    const config = await configUnder(envWith({ JWT_SECRET: sixteenTwoByteCharacters }))
    expect(config.tokens.secret).toHaveLength(32)
    expect(await misconfigured(envWith({ JWT_SECRET: 'a'.repeat(31) }))).toContain(
      'JWT_SECRET must be at least 32 bytes',
    )
  })

  it('turns OIDC_PROVIDERS into providers by name, with both algorithms unless some are named', async () => {
    const config = await configUnder(env)
    expect([...config.oidcProviders.keys()].sort()).toEqual(Object.keys(TEST_PROVIDERS).sort())
    expect(config.oidcProviders.get('apple')).toEqual({
      name: 'apple',
      issuers: TEST_PROVIDERS.apple.issuers,
      jwksUri: TEST_PROVIDERS.apple.jwks_uri,
      audiences: TEST_PROVIDERS.apple.audiences,
      algorithms: ['RS256', 'ES256'],
      nonce: 'sha256',
    })
    const rsOnly = JSON.stringify({ apple: { ...TEST_PROVIDERS.apple, algorithms: ['RS256'] } })
    expect((await configUnder(envWith({ OIDC_PROVIDERS: rsOnly }))).oidcProviders.get('apple')?.algorithms).toEqual([
      'RS256',
    ])
  })
})
