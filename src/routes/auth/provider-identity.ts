import type { Config } from '../../config'
import type { Db } from '../../db/client'
import { isIdTokenReplay, spendIdToken, spentIdToken } from '../../db/spent-id-tokens'
import { providerKeySet } from '../../http/provider-keys'
import { sha256Base64Url } from '../../lib/hmac'
import { idTokenInvalid, verifyIdToken } from '../../lib/oidc'
import type { ProviderIdentity } from '../../lib/oidc'

// An ID token of a sign-in provider (Apple, Google) as every route that takes one sees it:
// verified, and good for one use.

/** A verified ID token: who it names, and the statements that check and spend it. */
export interface VerifiedIdToken {
  identity: ProviderIdentity
  /** Batch it with the lookup the token is for: a row means the token was used before (assertFirstUse). */
  spent: ReturnType<typeof spentIdToken>
  /** Batch it with what the token allows; run that batch inside withIdTokenSpent(). */
  spend: ReturnType<typeof spendIdToken>
}

/**
 * Verifies an ID token of a configured provider; an unknown provider is refused as a bad token
 * (401 `token_invalid`, the same answer as every other problem with it).
 */
export async function verifyProviderToken(
  db: Db,
  config: Config,
  token: { provider: string; idToken: string; nonce: string | undefined },
  now: Date,
): Promise<VerifiedIdToken> {
  const provider = config.oidcProviders.get(token.provider)
  if (provider === undefined) throw idTokenInvalid()
  const identity = await verifyIdToken(
    token.idToken,
    provider,
    (fresh) => providerKeySet(provider.jwksUri, fresh, now),
    {
      nonce: token.nonce,
      leewaySeconds: config.tokens.leewaySeconds,
      now,
    },
  )
  const hash = await sha256Base64Url(token.idToken)
  return { identity, spent: spentIdToken(db, hash), spend: spendIdToken(db, hash, new Date(identity.expiresAt * 1000)) }
}

/** Refuses a replayed ID token: the lookup found it spent. */
export function assertFirstUse(spent: unknown[]): void {
  if (spent.length > 0) throw idTokenInvalid()
}

/**
 * Runs `work`, whose batch carries the token's spend: when a concurrent request spent it first,
 * the batch lands nothing and this request is refused like any replay.
 */
export async function withIdTokenSpent<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (isIdTokenReplay(err)) throw idTokenInvalid()
    throw err
  }
}
