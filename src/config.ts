import { z } from 'zod'
import { ApiError } from './lib/api-error'
import type { OidcProvider } from './lib/oidc'
import type { TokenSettings } from './lib/token-keys'
import type { MailQueueMessage } from './lib/mail-queue-messages'
import { webhookSecretBytes } from './lib/webhook-signatures'

export type { OidcProvider } from './lib/oidc'
export type { JwtAlgorithm, TokenSettings } from './lib/token-keys'

// The operator contract (docs/API.md § Configuration): the bindings and the variables the worker
// reads. Each variable is declared once, in ConfigSchema below, with its validation, its kind and
// its default; `Env` and the documentation tables (checked by `npm run check:docs`) follow from it.

const textEncoder = new TextEncoder()

/** How a variable is set: a [vars] entry of wrangler.toml, a secret (`wrangler secret put`), or either. */
export type VariableKind = 'var' | 'secret' | 'secret/var'

/** What the documentation says of a variable; read by scripts/checks against the README's table. */
export interface VariableMeta {
  kind: VariableKind
  /** As an operator would write it; absent when the variable is unset by default. */
  default?: string
  /** The worker refuses to serve without it. */
  required?: true
}

const variableMeta = new Map<z.ZodType, VariableMeta>()

function isBlank(value: unknown): boolean {
  return value === undefined || (typeof value === 'string' && value.trim() === '')
}

type Declared = VariableMeta & { trim?: false }

/**
 * A variable's schema: an empty value counts as unset, which means its default when it has one
 * (the only place that default is written), and surrounding blanks are trimmed, except from
 * JWT_SECRET, whose bytes are the HS256 key exactly as given (docs/API.md, precise point 1).
 */
function declare<T extends z.ZodType>(schema: T, meta: Declared) {
  const { trim, ...documented } = meta
  const declared = z.preprocess((value) => {
    if (isBlank(value)) return meta.default
    return typeof value === 'string' && trim !== false ? value.trim() : value
  }, schema)
  variableMeta.set(declared, documented)
  return declared
}

/** A variable that may be unset (no default). */
function optional<T extends z.ZodType>(schema: T, meta: Omit<Declared, 'default' | 'required'>) {
  return declare(schema.optional(), meta)
}

/** A variable with a default, or one the worker cannot serve without (`required`). */
function variable<T extends z.ZodType>(schema: T, meta: Declared & ({ default: string } | { required: true })) {
  return declare(schema, meta)
}

const TEN_YEARS = 10 * 365 * 86_400

/** Whole seconds, at least `min`, at most ten years. */
function seconds(defaultSeconds: number, { min = 1, max = TEN_YEARS }: { min?: number; max?: number } = {}) {
  return variable(z.coerce.number().int().min(min).max(max), { kind: 'var', default: String(defaultSeconds) })
}

/**
 * A URL with `{slug}` or `{id}` (or both) to fill in, and optionally `{PUBLIC_BASE_URL}`: an
 * absolute http(s) URL once filled.
 */
const PostUrlTemplateSchema = z.string().refine(
  (template) => {
    if (!template.includes('{slug}') && !template.includes('{id}')) return false
    const filled = template
      .replaceAll('{PUBLIC_BASE_URL}', 'https://example.com')
      .replaceAll('{slug}', 'a')
      .replaceAll('{id}', '1')
    try {
      return /^https?:$/.test(new URL(filled).protocol)
    } catch {
      return false
    }
  },
  { message: 'POST_URL_TEMPLATE must be an http(s) URL containing {slug} or {id}.' },
)

/** Text of at least 32 bytes: a secret key. */
function longSecret(name: string) {
  return z.string().refine((secret) => textEncoder.encode(secret).length >= 32, {
    message: `${name} must be at least 32 bytes long.`,
  })
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

/** JSON text of an object: parsed, or null (which the record schema then refuses) when it is not JSON. */
function parseJson(value: unknown): unknown {
  if (typeof value !== 'string') return value
  try {
    return JSON.parse(value) as unknown
  } catch {
    return null
  }
}

// A relying party id is a registrable domain or one under it, as browsers accept it.
const RP_ID = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/
// What clientDataJSON names as origin: a web origin, or an Android app by its signing key's hash.
const WEB_ORIGIN = /^https:\/\/[a-z0-9.-]+(?::[0-9]{1,5})?$|^http:\/\/localhost(?::[0-9]{1,5})?$/
const ANDROID_ORIGIN = /^android:apk-key-hash:[A-Za-z0-9_-]{43}$/
const APPLE_APP_ID = /^[A-Z0-9]{10}\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$/
const ANDROID_PACKAGE = /^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+$/
const CERT_FINGERPRINT = /^[0-9A-F]{2}(?::[0-9A-F]{2}){31}$/

function isUrl(text: string): boolean {
  try {
    new URL(text)
    return true
  } catch {
    return false
  }
}

/** Comma-separated text as its non-empty entries, trimmed. */
function commaList(text: string): string[] {
  return text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
}

/** A comma-separated list whose every entry matches `pattern`, refused naming the variable. */
function listOf(name: string, pattern: RegExp, what: string) {
  return z
    .string()
    .transform(commaList)
    .pipe(
      z
        .array(z.string().regex(pattern, { message: `${name}: each entry must be ${what}.` }))
        .min(1, { message: `${name} lists nothing.` }),
    )
}

const AndroidAppSchema = z.strictObject({
  package_name: z.string().regex(ANDROID_PACKAGE),
  sha256_cert_fingerprints: z.array(z.string().regex(CERT_FINGERPRINT)).min(1),
})

const ConfigSchema = z
  .object({
    JWT_SECRET: variable(z.string({ error: 'JWT_SECRET is not set.' }).pipe(longSecret('JWT_SECRET')), {
      kind: 'secret',
      required: true,
      trim: false,
    }),
    JWT_ALG: variable(z.enum(['HS256', 'EdDSA', 'ES256']), { kind: 'var', default: 'HS256' }),
    JWT_PRIVATE_JWK: optional(z.string(), { kind: 'secret' }),
    JWT_PUBLIC_JWKS: optional(z.string(), { kind: 'secret/var' }),
    JWT_ISSUER: optional(z.string(), { kind: 'var' }),
    JWT_AUDIENCE: optional(z.string(), { kind: 'var' }),
    JWT_LEEWAY: seconds(5, { min: 0, max: 300 }),
    ACCESS_TOKEN_TTL: seconds(300),
    REFRESH_TOKEN_TTL: seconds(86_400),
    REFRESH_REUSE_GRACE: seconds(10, { min: 0 }),
    // However often a session refreshes, it ends this long after its login (30 days).
    SESSION_MAX_AGE: seconds(30 * 86_400),
    // KV refuses cacheTtl below 30 s; 60 s is KV's own default.
    REVOCATION_CACHE_TTL: seconds(60, { min: 30 }),
    // How recent a sign-in lasting changes need (linking a provider, a second factor, the email,
    // deleting the account); older ones step up with POST /auth/reauthenticate.
    REAUTH_MAX_AGE: seconds(600),
    PASSWORD_PEPPER: optional(z.string(), { kind: 'secret' }),
    MFA_ENCRYPTION_KEY: optional(longSecret('MFA_ENCRYPTION_KEY'), { kind: 'secret' }),
    OIDC_PROVIDERS: optional(
      z.preprocess(parseJson, z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/), OidcProviderSchema)),
      { kind: 'var' },
    ),
    // Passkeys (docs/API.md § Passkeys). The relying party id defaults to PUBLIC_BASE_URL's host,
    // the accepted origins to its origin.
    WEBAUTHN_RP_ID: optional(
      z.string().regex(RP_ID, {
        message: 'WEBAUTHN_RP_ID must be a lower-case domain name (no scheme, port or path), such as example.com.',
      }),
      { kind: 'var' },
    ),
    WEBAUTHN_RP_NAME: variable(
      z.string().min(1, { message: 'WEBAUTHN_RP_NAME must be 1 to 64 characters.' }).max(64, {
        message: 'WEBAUTHN_RP_NAME must be 1 to 64 characters.',
      }),
      { kind: 'var', default: 'edgepress' },
    ),
    WEBAUTHN_ORIGINS: optional(
      listOf(
        'WEBAUTHN_ORIGINS',
        new RegExp(`${WEB_ORIGIN.source}|${ANDROID_ORIGIN.source}`),
        'an https:// origin, an http://localhost[:port] origin or android:apk-key-hash:<base64url SHA-256>',
      ),
      { kind: 'var' },
    ),
    // The apps that may use this site's passkeys (iOS associated domains, Android asset links).
    APPLE_APP_IDS: optional(listOf('APPLE_APP_IDS', APPLE_APP_ID, 'TEAMID.bundle.id'), { kind: 'var' }),
    ANDROID_APPS: optional(
      z.preprocess(
        parseJson,
        z.array(AndroidAppSchema, {
          error: 'ANDROID_APPS must be a JSON array of {package_name, sha256_cert_fingerprints: ["AB:CD:…"]}.',
        }),
      ),
      { kind: 'var' },
    ),
    PUBLIC_BASE_URL: variable(z.url(), { kind: 'var', default: 'http://localhost:8787' }),
    // The blog's name, as feed readers show it.
    FEED_TITLE: variable(z.string().trim().min(1).max(200), { kind: 'var', default: 'edgepress' }),
    // Where the blog's front end shows a post: posts answer it as `url`, the feed and newsletters link it.
    POST_URL_TEMPLATE: variable(PostUrlTemplateSchema, { kind: 'var', default: '{PUBLIC_BASE_URL}/posts/{slug}' }),
    CORS_ORIGINS: optional(z.string(), { kind: 'var' }),
    COOKIE_SAMESITE: variable(z.enum(['Strict', 'Lax', 'None']), { kind: 'var', default: 'Strict' }),
    MAIL_TRANSPORT: variable(z.enum(['console', 'http', 'resend']), { kind: 'var', default: 'console' }),
    MAIL_FROM: variable(z.string(), { kind: 'var', default: 'edgepress <no-reply@edgepress.local>' }),
    MAIL_API_KEY: optional(z.string(), { kind: 'secret' }),
    MAIL_API_URL: variable(z.url(), { kind: 'var', default: 'https://api.resend.com/emails' }),
    // Newsletters go out in batches of up to 100 messages per request.
    MAIL_API_BATCH_URL: variable(z.url(), { kind: 'var', default: 'https://api.resend.com/emails/batch' }),
    // Signs the provider's webhooks (POST /api/v1/email/events); unset, that route is 404.
    MAIL_WEBHOOK_SECRET: optional(
      z.string().refine((secret) => webhookSecretBytes(secret) !== null, {
        message: 'MAIL_WEBHOOK_SECRET must be whsec_ followed by the base64 secret the provider shows.',
      }),
      { kind: 'secret' },
    ),
    LOG_REQUESTS: variable(z.enum(['true', 'false']), { kind: 'var', default: 'true' }),
  })
  .refine((env) => env.JWT_ALG === 'HS256' || env.JWT_PRIVATE_JWK !== undefined, {
    message: 'JWT_PRIVATE_JWK must be set when JWT_ALG is EdDSA or ES256.',
    path: ['JWT_PRIVATE_JWK'],
  })
  .refine((env) => env.MAIL_TRANSPORT === 'console' || env.MAIL_API_KEY !== undefined, {
    message: 'MAIL_API_KEY must be set when MAIL_TRANSPORT is not console.',
    path: ['MAIL_API_KEY'],
  })
  .superRefine((env, context) => {
    // Browsers let an origin use only its own domain or one above it as relying party.
    // The refinement also runs when a field failed; those are reported already.
    if (!isUrl(env.PUBLIC_BASE_URL)) return
    const { rpId, origins } = relyingParty(env)
    for (const origin of origins) {
      if (origin.startsWith('android:') || !isUrl(origin)) continue
      const host = new URL(origin).hostname
      if (host === rpId || host.endsWith(`.${rpId}`)) continue
      context.addIssue({
        code: 'custom',
        path: ['WEBAUTHN_ORIGINS'],
        message: `WEBAUTHN_ORIGINS: ${origin} is not on ${rpId} (WEBAUTHN_RP_ID) or a domain under it.`,
      })
    }
  })

/** The variables, as ConfigSchema declares them: name, kind and default. */
export function configVariables(): ({ name: string } & VariableMeta)[] {
  return Object.entries(ConfigSchema.shape).map(([name, schema]) => ({ name, ...variableMeta.get(schema)! }))
}

/** The bindings of wrangler.toml the worker uses, by kind as the documentation names them. */
export const BINDING_KINDS = {
  DB: 'D1 binding',
  REVOKED_TOKENS: 'KV binding',
  ASSETS: 'static assets binding',
  CREDENTIALS_BY_IP: 'rate-limit binding',
  CREDENTIALS_BY_ACCOUNT: 'rate-limit binding',
  WRITES_BY_USER: 'rate-limit binding',
  MAIL_QUEUE: 'queue producer binding',
  NEWSLETTER_SENDER: 'Durable Object binding',
  REVOCATIONS: 'Durable Object binding',
} as const satisfies Record<keyof Bindings, string>

export interface Bindings {
  DB: D1Database
  REVOKED_TOKENS: KVNamespace
  /** Workers Static Assets (public/); absent in the vitest pool. */
  ASSETS?: Fetcher
  CREDENTIALS_BY_IP?: RateLimit
  CREDENTIALS_BY_ACCOUNT?: RateLimit
  WRITES_BY_USER?: RateLimit
  /** The mail queue (wrangler.toml [[queues.producers]]): outbox drains and newsletter batches. */
  MAIL_QUEUE?: Queue<MailQueueMessage>
  /**
   * One NewsletterSender per newsletter: serializes its batches with a cancel. Untyped here (naming
   * the class would import it, and it imports this file); senderOf in src/newsletters/sender.ts
   * gives the typed stub.
   */
  NEWSLETTER_SENDER?: DurableObjectNamespace
  /**
   * The one RevocationPublisher: coalesces revocations into the shared filter in REVOKED_TOKENS
   * (src/sessions/revocation-keys.ts). Untyped here for the same reason.
   */
  REVOCATIONS?: DurableObjectNamespace
}

/** What the worker is given: its bindings and, as text, each variable of ConfigSchema. */
export type Env = Bindings & { [Name in keyof typeof ConfigSchema.shape]?: string }

type ParsedEnv = z.output<typeof ConfigSchema>

/** The parsed configuration: what code reads (c.get('config'), or getConfig(env) in the cron). */
export type Config = ReturnType<typeof toConfig>

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

function toConfig(env: ParsedEnv) {
  return {
    tokens: tokenSettings(env),
    passwordPepper: env.PASSWORD_PEPPER,
    /** The secret TOTP secrets are sealed under (MFA_ENCRYPTION_KEY); unset: no factor can be enrolled. */
    mfaEncryptionKey: env.MFA_ENCRYPTION_KEY,
    /** The base of every link in an email, without a trailing slash. */
    publicBaseUrl: env.PUBLIC_BASE_URL.replace(/\/+$/, ''),
    feedTitle: env.FEED_TITLE,
    /** POST_URL_TEMPLATE with PUBLIC_BASE_URL filled in: `{slug}` and `{id}` remain (postUrl()). */
    postUrlTemplate: env.POST_URL_TEMPLATE.replaceAll('{PUBLIC_BASE_URL}', env.PUBLIC_BASE_URL.replace(/\/+$/, '')),
    corsOrigins: (env.CORS_ORIGINS ?? '')
      .split(',')
      .map((origin) => origin.trim())
      .filter((origin) => origin !== ''),
    /** SameSite of the cookie-mode token cookies. */
    cookieSameSite: env.COOKIE_SAMESITE,
    /** One JSON log line per request. */
    logRequests: env.LOG_REQUESTS !== 'false',
    /** Passkeys: the relying party and the origins clientDataJSON may name. */
    webauthn: { ...relyingParty(env), rpName: env.WEBAUTHN_RP_NAME },
    /** The iOS apps of the association file (`TEAMID.bundle.id`); unset: no file. */
    appleAppIds: env.APPLE_APP_IDS,
    /** The Android apps of assetlinks.json; unset: no file. */
    androidApps: env.ANDROID_APPS,
    /** Native sign-in providers by name (none unless configured). */
    oidcProviders: oidcProviders(env.OIDC_PROVIDERS ?? {}),
    mail: {
      /**
       * `console` (the default) prints every message, tokens included: for local runs only. With an
       * https:// PUBLIC_BASE_URL, the sign of a deployed worker, it is refused (src/email/transports.ts).
       */
      transport: env.MAIL_TRANSPORT,
      from: env.MAIL_FROM,
      apiKey: env.MAIL_API_KEY,
      apiUrl: env.MAIL_API_URL,
      batchUrl: env.MAIL_API_BATCH_URL,
      /** The `whsec_` secret of provider webhooks (bounces, complaints); unset: none are taken. */
      webhookSecret: env.MAIL_WEBHOOK_SECRET,
    },
  }
}

/** WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS, or what PUBLIC_BASE_URL makes of them when unset. */
function relyingParty(env: Pick<ParsedEnv, 'WEBAUTHN_RP_ID' | 'WEBAUTHN_ORIGINS' | 'PUBLIC_BASE_URL'>): {
  rpId: string
  origins: readonly string[]
} {
  const base = new URL(env.PUBLIC_BASE_URL)
  return { rpId: env.WEBAUTHN_RP_ID ?? base.hostname, origins: env.WEBAUTHN_ORIGINS ?? [base.origin] }
}

function tokenSettings(env: ParsedEnv): TokenSettings {
  return {
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
    reauthMaxAgeSeconds: env.REAUTH_MAX_AGE,
  }
}

function oidcProviders(declared: NonNullable<ParsedEnv['OIDC_PROVIDERS']>): ReadonlyMap<string, OidcProvider> {
  return new Map(
    Object.entries(declared).map(([name, provider]) => [
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
  )
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
