import type { Config } from '../config'
import type { Db } from '../db/client'
import type { TokenKeys } from '../lib/token-keys'
import type { RevocationStore } from './revocation-keys'

/**
 * What the login-session protocol works with: the request's D1, where revocations are kept, the
 * token keys and the configuration. One object, so each function takes it whole rather than a
 * list of its parts.
 */
export interface SessionDeps {
  db: Db
  revocations: RevocationStore
  keys: TokenKeys
  config: Config
}

const toSeconds = (date: Date): number => Math.floor(date.getTime() / 1000)

/** `seconds` before `now`. */
export function secondsBefore(now: Date, seconds: number): Date {
  return new Date(now.getTime() - seconds * 1000)
}

/** The session must have started after this to be refreshed (SESSION_MAX_AGE). */
export function sessionStartLimit(keys: TokenKeys, now: Date): Date {
  return secondsBefore(now, keys.sessionMaxAgeSeconds)
}

/**
 * Epoch seconds until which a revocation key must live: an access token minted just before the
 * revocation may outlive the refresh token's expiry when ACCESS_TOKEN_TTL > REFRESH_TOKEN_TTL, so
 * the key lives until the later of the two.
 */
export function lastTokenExpiry(refreshExpiresAt: Date | undefined, keys: TokenKeys, now: Date): number {
  const accessLimit = toSeconds(now) + keys.accessTtlSeconds + keys.leewaySeconds
  const refreshLimit = refreshExpiresAt === undefined ? 0 : toSeconds(refreshExpiresAt)
  return Math.max(accessLimit, refreshLimit)
}
