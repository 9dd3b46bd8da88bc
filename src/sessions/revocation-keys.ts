import { ApiError } from '../lib/api-error'

// The single owner of KV key names in REVOKED_TOKENS.
//
// Every revocation edgepress makes ends a whole login session (logout, reuse detection,
// logout-all, password change or reset, account deletion), so one key per session answers
// "is this token or its session revoked" with one KV read on the hot path. Rotated refresh tokens
// need no key: the session row in D1 is the authority for refresh and knows the current jti.

const SESSION_PREFIX = 'sid:'

// A key nobody writes: reading it proves KV answers without depending on any data (/health).
const PROBE_KEY = 'health:probe'

// KV refuses expirationTtl below 60 s (also enforced locally).
const KV_MIN_TTL_SECONDS = 60

export interface SessionRevocation {
  sid: string
  /** Epoch seconds after which no token of the session can verify, so the key may expire. */
  lastTokenExpiresAt: number
}

/** Marks sessions revoked until their last token would have expired anyway. */
export async function revokeSessionKeys(
  kv: KVNamespace,
  revocations: SessionRevocation[],
  reason: string,
  now: Date,
): Promise<void> {
  const nowSeconds = Math.floor(now.getTime() / 1000)
  await Promise.all(
    revocations.map(({ sid, lastTokenExpiresAt }) =>
      kv.put(SESSION_PREFIX + sid, reason, {
        expirationTtl: Math.max(KV_MIN_TTL_SECONDS, lastTokenExpiresAt - nowSeconds + 1),
      }),
    ),
  )
}

/**
 * One KV read: has the session this token belongs to been revoked? `cacheTtlSeconds` is how long
 * this location may keep the answer (KV's minimum is 30 s): together with KV's own propagation it
 * bounds how long a revocation made elsewhere can go unnoticed here.
 */
export async function isSessionRevoked(kv: KVNamespace, sid: string, cacheTtlSeconds: number): Promise<boolean> {
  return (await kv.get(SESSION_PREFIX + sid, { cacheTtl: cacheTtlSeconds })) !== null
}

/**
 * Refuses a token whose session was revoked (401 `token_revoked`); fails closed with 503 and
 * Retry-After when KV cannot answer.
 */
export async function assertSessionNotRevoked(kv: KVNamespace, sid: string, cacheTtlSeconds: number): Promise<void> {
  let revoked: boolean
  try {
    revoked = await isSessionRevoked(kv, sid, cacheTtlSeconds)
  } catch (err) {
    throw new ApiError(503, 'service_unavailable', 'Token revocation cannot be checked right now.', {
      headers: { 'Retry-After': '5' },
      cause: err,
    })
  }
  if (revoked) throw new ApiError(401, 'token_revoked', 'The token has been revoked.')
}

/** One KV read that proves the namespace answers (/health); throws when it does not. */
export async function pingKv(kv: KVNamespace): Promise<void> {
  await kv.get(PROBE_KEY)
}
