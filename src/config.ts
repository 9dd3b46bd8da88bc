import { z } from 'zod'
import { ApiError } from './lib/api-error'
import type { OidcProvider } from './lib/oidc'
import type { TokenSettings } from './lib/token-keys'

export type { OidcProvider } from './lib/oidc'
export type { JwtAlgorithm, TokenSettings } from './lib/token-keys'

const textEncoder = new TextEncoder()

/** Bindings and variables the worker reads; names are the operator contract (docs/API.md § Configuration). */
export interface Env {
  DB: D1Database
  REVOKED_TOKENS: KVNamespace
  /** Workers Static Assets (public/); absent in the vitest pool. */
  ASSETS?: Fetcher
  CREDENTIALS_BY_IP?: RateLimit
  CREDENTIALS_BY_ACCOUNT?: RateLimit
  WRITES_BY_USER?: RateLimit
  JWT_SECRET?: string
  JWT_PRIVATE_JWK?: string
  JWT_PUBLIC_JWKS?: string
  JWT_ALG?: string
  JWT_ISSUER?: string
  JWT_AUDIENCE?: string
  JWT_LEEWAY?: string
  ACCESS_TOKEN_TTL?: string
  REFRESH_TOKEN_TTL?: string
  REFRESH_REUSE_GRACE?: string
  SESSION_MAX_AGE?: string
  REVOCATION_CACHE_TTL?: string
  PASSWORD_PEPPER?: string
  MFA_ENCRYPTION_KEY?: string
  PUBLIC_BASE_URL?: string
  CORS_ORIGINS?: string
  MAIL_TRANSPORT?: string
  MAIL_FROM?: string
  MAIL_API_KEY?: string
  MAIL_API_URL?: string
  LOG_REQUESTS?: string
  COOKIE_SAMESITE?: string
  OIDC_PROVIDERS?: string
}

const optionalText = z
  .string()
  .optional()
  .transform((value) => (value === undefined || value.trim() === '' ? undefined : value.trim()))

function seconds(defaultValue: number, { min = 1 }: { min?: number } = {}) {
  return z.preprocess(
    (value) => (value === undefined || value === '' ? defaultValue : value),
    z.coerce
      .number()
      .int()
      .min(min)
      .max(10 * 365 * 86_400),
  )
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]'])

/** One OpenID Connect provider of OIDC_PROVIDERS (docs/API.md § Configuration). */
const OidcProviderSchema = z.strictObject({
  /** The accepted `iss` values (Google uses two spellings). */
  issuers: z.array(z.string().min(1)).min(1),
  // HTTPS, except a loopback host (local development and the tests' fake provider).
  jwks_uri: z.url().refine((uri) => {
    const url = new URL(uri)
    return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))
  }),
  /** The accepted `aud` values: the iOS bundle id, the Android and web client ids. */
  audiences: z.array(z.string().min(1)).min(1),
  /** How the client's nonce appears in the token: its SHA-256 in hex (Apple) or as sent (Google). */
  nonce: z.enum(['sha256', 'plain']),
  /** The signature algorithms accepted; both Apple and Google sign with RS256. */
  algorithms: z
    .array(z.enum(['RS256', 'ES256']))
    .min(1)
    .default(['RS256', 'ES256']),
})

const OidcProvidersSchema = z.preprocess(
  (value) => {
    if (value === undefined || (typeof value === 'string' && value.trim() === '')) return {}
    if (typeof value !== 'string') return value
    try {
      return JSON.parse(value) as unknown
    } catch {
      return null
    }
  },
  z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/), OidcProviderSchema),
)

const ConfigSchema = z
  .object({
    JWT_ALG: z.enum(['HS256', 'EdDSA', 'ES256']).default('HS256'),
    JWT_SECRET: z
      .string({ error: 'JWT_SECRET is not set.' })
      .refine((secret) => textEncoder.encode(secret).length >= 32, {
        message: 'JWT_SECRET must be at least 32 bytes long.',
      }),
    JWT_PRIVATE_JWK: optionalText,
    JWT_PUBLIC_JWKS: optionalText,
    JWT_ISSUER: optionalText,
    JWT_AUDIENCE: optionalText,
    JWT_LEEWAY: seconds(5, { min: 0 }).pipe(z.number().max(300)),
    ACCESS_TOKEN_TTL: seconds(300),
    REFRESH_TOKEN_TTL: seconds(86_400),
    REFRESH_REUSE_GRACE: seconds(10, { min: 0 }),
    // However often a session refreshes, it ends this long after its login (30 days).
    SESSION_MAX_AGE: seconds(30 * 86_400),
    // KV refuses cacheTtl below 30 s; 60 s is KV's own default.
    REVOCATION_CACHE_TTL: seconds(60, { min: 30 }),
    PASSWORD_PEPPER: optionalText,
    MFA_ENCRYPTION_KEY: optionalText.refine((key) => key === undefined || textEncoder.encode(key).length >= 32, {
      message: 'MFA_ENCRYPTION_KEY must be at least 32 bytes long.',
    }),
    PUBLIC_BASE_URL: optionalText.pipe(z.url().optional()),
    CORS_ORIGINS: optionalText,
    MAIL_TRANSPORT: optionalText.pipe(z.enum(['console', 'http', 'resend']).optional()),
    MAIL_FROM: optionalText,
    MAIL_API_KEY: optionalText,
    MAIL_API_URL: optionalText.pipe(z.url().optional()),
    LOG_REQUESTS: optionalText.pipe(z.enum(['true', 'false']).optional()),
    COOKIE_SAMESITE: optionalText.pipe(z.enum(['Strict', 'Lax', 'None']).optional()),
    OIDC_PROVIDERS: OidcProvidersSchema,
  })
  .refine((env) => env.JWT_ALG === 'HS256' || env.JWT_PRIVATE_JWK !== undefined, {
    message: 'JWT_PRIVATE_JWK must be set when JWT_ALG is EdDSA or ES256.',
    path: ['JWT_PRIVATE_JWK'],
  })
  .refine((env) => (env.MAIL_TRANSPORT ?? 'console') === 'console' || env.MAIL_API_KEY !== undefined, {
    message: 'MAIL_API_KEY must be set when MAIL_TRANSPORT is not console.',
    path: ['MAIL_API_KEY'],
  })

export interface Config {
  tokens: TokenSettings
  passwordPepper: string | undefined
  /** The secret TOTP secrets are sealed under (MFA_ENCRYPTION_KEY); unset: no factor can be enrolled. */
  mfaEncryptionKey: string | undefined
  publicBaseUrl: string
  corsOrigins: string[]
  /** SameSite of the cookie-mode session cookies (COOKIE_SAMESITE, default Strict). */
  cookieSameSite: 'Strict' | 'Lax' | 'None'
  /** One JSON log line per request (LOG_REQUESTS, default true). */
  logRequests: boolean
  /** Native sign-in providers by name (OIDC_PROVIDERS, default none). */
  oidcProviders: ReadonlyMap<string, OidcProvider>
  mail: {
    /**
     * `console` (the default) prints every message, tokens included: for local runs only. With an
     * https:// PUBLIC_BASE_URL, the sign of a deployed worker, it is refused (src/email/transports.ts).
     */
    transport: 'console' | 'http' | 'resend'
    from: string
    apiKey: string | undefined
    apiUrl: string
  }
}

const parsed = new WeakMap<object, Config>()

/**
 * Parses the environment once per isolate (per env object). Throws a 500 ApiError that names the
 * variable to fix, never its value.
 */
export function getConfig(env: Env): Config {
  const cached = parsed.get(env)
  if (cached !== undefined) return cached
  const result = ConfigSchema.safeParse(env)
  if (!result.success) throw configInvalid(result.error)
  const config = toConfig(result.data)
  parsed.set(env, config)
  return config
}

function toConfig(env: z.output<typeof ConfigSchema>): Config {
  return {
    tokens: {
      alg: env.JWT_ALG,
      secret: textEncoder.encode(env.JWT_SECRET),
      privateJwk: env.JWT_PRIVATE_JWK,
      publicJwks: env.JWT_PUBLIC_JWKS,
      issuer: env.JWT_ISSUER,
      audience: env.JWT_AUDIENCE,
      leewaySeconds: env.JWT_LEEWAY,
      accessTtlSeconds: env.ACCESS_TOKEN_TTL,
      refreshTtlSeconds: env.REFRESH_TOKEN_TTL,
      reuseGraceSeconds: env.REFRESH_REUSE_GRACE,
      sessionMaxAgeSeconds: env.SESSION_MAX_AGE,
      revocationCacheTtlSeconds: env.REVOCATION_CACHE_TTL,
    },
    passwordPepper: env.PASSWORD_PEPPER,
    mfaEncryptionKey: env.MFA_ENCRYPTION_KEY,
    publicBaseUrl: (env.PUBLIC_BASE_URL ?? 'http://localhost:8787').replace(/\/+$/, ''),
    corsOrigins: (env.CORS_ORIGINS ?? '')
      .split(',')
      .map((origin) => origin.trim())
      .filter((origin) => origin !== ''),
    logRequests: env.LOG_REQUESTS !== 'false',
    cookieSameSite: env.COOKIE_SAMESITE ?? 'Strict',
    oidcProviders: new Map(
      Object.entries(env.OIDC_PROVIDERS).map(([name, provider]) => [
        name,
        {
          name,
          issuers: provider.issuers,
          jwksUri: provider.jwks_uri,
          audiences: provider.audiences,
          algorithms: provider.algorithms,
          nonce: provider.nonce,
        },
      ]),
    ),
    mail: {
      transport: env.MAIL_TRANSPORT ?? 'console',
      from: env.MAIL_FROM ?? 'edgepress <no-reply@edgepress.local>',
      apiKey: env.MAIL_API_KEY,
      apiUrl: env.MAIL_API_URL ?? 'https://api.resend.com/emails',
    },
  }
}

function configInvalid(error: z.ZodError): ApiError {
  const problems = error.issues.map((issue) => {
    // The variable, never a path into its value (an OIDC_PROVIDERS key may be anything).
    const name = String(issue.path[0] ?? 'configuration')
    // zod's own messages can quote the received value; only our messages are safe to show.
    const message = issue.message.startsWith(name) ? issue.message : `${name} is invalid.`
    return message
  })
  const fix = problems.some((message) => message.startsWith('JWT_SECRET'))
    ? ' Locally, delete .dev.vars and run `npm run dev` to create a random one; in production run `wrangler secret put JWT_SECRET`.'
    : ' Fix the worker configuration (wrangler.toml [vars] or `wrangler secret put`).'
  return new ApiError(500, 'internal_error', `Server misconfigured: ${problems.join(' ')}${fix}`)
}
