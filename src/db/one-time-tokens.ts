import { and, eq, gt, isNull, lt, sql } from 'drizzle-orm'
import type { AnyColumn, SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { ApiError } from '../lib/api-error'
import { randomToken } from '../lib/encoding'
import { sha256Base64Url } from '../lib/hmac'
import type { BatchStatements, Db } from './client'
import { oneTimeTokens } from './schema'
import type { OneTimeTokenPurpose } from './schema'

const ONE_TIME_TOKEN_TTL_MS: Record<OneTimeTokenPurpose, number> = {
  email_verification: 24 * 3_600_000,
  password_reset: 3_600_000,
  subscription_confirmation: 7 * 24 * 3_600_000,
}

interface TokenOwner {
  /** A user id, or a subquery yielding it when the user is inserted in the same batch. */
  userId?: number | SQL
  subscriberId?: number | SQL
  email: string
}

/**
 * A new random token (256 bits) and the INSERT that stores only its SHA-256; put the insert in the
 * same db.batch() as the outbox message that carries the token.
 */
export async function issueOneTimeToken(
  db: Db,
  purpose: OneTimeTokenPurpose,
  owner: TokenOwner,
  now: Date,
): Promise<{ token: string; insert: BatchItem<'sqlite'> }> {
  const token = randomToken(32)
  const insert = db.insert(oneTimeTokens).values({
    tokenHash: await sha256Base64Url(token),
    purpose,
    userId: owner.userId ?? null,
    subscriberId: owner.subscriberId ?? null,
    email: owner.email,
    createdAt: now,
    expiresAt: new Date(now.getTime() + ONE_TIME_TOKEN_TTL_MS[purpose]),
  })
  return { token, insert }
}

/** What a token's effects may refer to: subqueries that yield a value only while the token is live. */
export interface LiveToken {
  userId: SQL
  subscriberId: SQL
  email: SQL
}

/**
 * Spends a token and applies its effects in one atomic D1 batch. `effects` get subqueries that
 * yield the token's owner only while the token is unused and unexpired, so when the token is not
 * live they change nothing; the final conditional UPDATE spends it, so of two concurrent uses
 * exactly one succeeds. Unknown, used or foreign-purpose tokens → 400 `token_invalid`; expired
 * ones → 400 `token_expired`.
 */
export async function consumeOneTimeToken(
  db: Db,
  purpose: OneTimeTokenPurpose,
  token: string,
  now: Date,
  effects: (live: LiveToken) => BatchItem<'sqlite'>[] = () => [],
): Promise<{ userId: number | null; subscriberId: number | null; email: string }> {
  const tokenHash = await sha256Base64Url(token)
  const isLive = and(
    eq(oneTimeTokens.tokenHash, tokenHash),
    eq(oneTimeTokens.purpose, purpose),
    isNull(oneTimeTokens.usedAt),
    gt(oneTimeTokens.expiresAt, now),
  )
  const liveColumn = (column: AnyColumn): SQL => sql`(select ${column} from ${oneTimeTokens} where ${isLive})`
  const live: LiveToken = {
    userId: liveColumn(oneTimeTokens.userId),
    subscriberId: liveColumn(oneTimeTokens.subscriberId),
    email: liveColumn(oneTimeTokens.email),
  }
  const spend = db
    .update(oneTimeTokens)
    .set({ usedAt: now })
    .where(isLive)
    .returning({ userId: oneTimeTokens.userId, subscriberId: oneTimeTokens.subscriberId, email: oneTimeTokens.email })
  const statements: BatchItem<'sqlite'>[] = [...effects(live), spend]
  const results = await db.batch(statements as BatchStatements)
  const [spent] = results[results.length - 1] as { userId: number | null; subscriberId: number | null; email: string }[]
  if (spent !== undefined) return spent
  const known = await db.query.oneTimeTokens.findFirst({
    columns: { usedAt: true, purpose: true },
    where: eq(oneTimeTokens.tokenHash, tokenHash),
  })
  if (known !== undefined && known.purpose === purpose && known.usedAt === null) {
    throw new ApiError(400, 'token_expired', 'This link has expired. Ask for a new one.')
  }
  throw new ApiError(400, 'token_invalid', 'This link is invalid or has already been used.')
}

/** Deletes tokens that expired before `cutoff` (the cron). */
export function pruneOneTimeTokens(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(oneTimeTokens).where(lt(oneTimeTokens.expiresAt, cutoff))
}
