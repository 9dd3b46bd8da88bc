import { and, eq, gt, isNull, lt, ne, sql } from 'drizzle-orm'
import type { AnyColumn, SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { ApiError } from '../lib/api-error'
import { randomToken } from '../lib/encoding'
import { sha256Base64Url } from '../lib/hmac'
import type { BatchStatements, Db } from './client'
import { oneTimeTokens, subscribers, users } from './schema'
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
 * The per-recipient mail limit: a token is issued only while fewer than `max` tokens of its
 * purpose went to the address since `since`. Counted inside the INSERT, so a burst of concurrent
 * requests cannot get past it (D1 runs statements one at a time).
 */
export interface RecipientLimit {
  max: number
  since: Date
}

/** A new token: the secret to mail, the SHA-256 stored, and the INSERT to batch. */
export interface IssuedToken {
  token: string
  tokenHash: string
  insert: BatchItem<'sqlite'>
}

function sentWithinLimit(email: SQL | AnyColumn | string, purpose: OneTimeTokenPurpose, limit: RecipientLimit): SQL {
  return sql`(select count(*) from ${oneTimeTokens} where lower(${oneTimeTokens.email}) = lower(${email}) and ${oneTimeTokens.purpose} = ${purpose} and ${oneTimeTokens.createdAt} >= ${limit.since.getTime()}) < ${limit.max}`
}

async function newToken(): Promise<{ token: string; tokenHash: string }> {
  const token = randomToken(32)
  return { token, tokenHash: await sha256Base64Url(token) }
}

/**
 * A new random token (256 bits) and the INSERT that stores only its SHA-256, within `limit` when
 * given; put the insert in the same db.batch() as the outbox message that carries the token.
 */
export async function issueOneTimeToken(
  db: Db,
  purpose: OneTimeTokenPurpose,
  owner: TokenOwner,
  now: Date,
  limit?: RecipientLimit,
): Promise<IssuedToken> {
  const { token, tokenHash } = await newToken()
  const expiresAt = new Date(now.getTime() + ONE_TIME_TOKEN_TTL_MS[purpose])
  if (limit === undefined) {
    const insert = db.insert(oneTimeTokens).values({
      tokenHash,
      purpose,
      userId: owner.userId ?? null,
      subscriberId: owner.subscriberId ?? null,
      email: owner.email,
      createdAt: now,
      expiresAt,
    })
    return { token, tokenHash, insert }
  }
  // Every column, in the table's order (drizzle's insert … select).
  const row = sql`select ${tokenHash}, ${purpose}, ${owner.userId ?? null}, ${owner.subscriberId ?? null}, ${owner.email}, ${now.getTime()}, ${expiresAt.getTime()}, null where ${sentWithinLimit(owner.email, purpose, limit)}`
  return { token, tokenHash, insert: db.insert(oneTimeTokens).select(row) }
}

/**
 * A token for the account that has `email`, if one has and the limit allows: the lookup is part
 * of the INSERT, so the request makes the same round trips whether the address has an account or
 * not (password reset: nothing tells the caller which).
 */
export async function issueTokenForAccountEmail(
  db: Db,
  purpose: OneTimeTokenPurpose,
  email: string,
  now: Date,
  limit: RecipientLimit,
): Promise<IssuedToken> {
  const { token, tokenHash } = await newToken()
  const expiresAt = now.getTime() + ONE_TIME_TOKEN_TTL_MS[purpose]
  const row = sql`select ${tokenHash}, ${purpose}, ${users.id}, null, ${users.email}, ${now.getTime()}, ${expiresAt}, null from ${users} where lower(${users.email}) = lower(${email}) and ${sentWithinLimit(users.email, purpose, limit)}`
  return { token, tokenHash, insert: db.insert(oneTimeTokens).select(row) }
}

/**
 * A confirmation token for the subscriber with `email`, if it is pending (subscribing has just
 * made it so, unless it is active) and the limit allows: one statement whatever the address.
 */
export async function issueTokenForPendingSubscriber(
  db: Db,
  email: string,
  now: Date,
  limit: RecipientLimit,
): Promise<IssuedToken> {
  const { token, tokenHash } = await newToken()
  const purpose = 'subscription_confirmation'
  const expiresAt = now.getTime() + ONE_TIME_TOKEN_TTL_MS[purpose]
  const row = sql`select ${tokenHash}, ${purpose}, null, ${subscribers.id}, ${subscribers.email}, ${now.getTime()}, ${expiresAt}, null from ${subscribers} where lower(${subscribers.email}) = lower(${email}) and ${subscribers.status} = 'pending' and ${sentWithinLimit(subscribers.email, purpose, limit)}`
  return { token, tokenHash, insert: db.insert(oneTimeTokens).select(row) }
}

/** True while fewer than `limit.max` tokens of `purpose` went to `email` since `limit.since`: for a statement's WHERE. */
export function withinRecipientLimit(email: string, purpose: OneTimeTokenPurpose, limit: RecipientLimit): SQL {
  return sentWithinLimit(email, purpose, limit)
}

/** What a token's effects may refer to: subqueries that yield a value only while the token is live. */
export interface LiveToken {
  /** The SHA-256 of the token itself (not a subquery). */
  tokenHash: string
  userId: SQL
  subscriberId: SQL
  email: SQL
}

// A token mailed to a user works only while the account still has the address it went to: after
// an email change, every link sent to the old address is dead.
const addressIsCurrent = sql`(${oneTimeTokens.userId} is null or exists (select 1 from ${users} where ${users.id} = ${oneTimeTokens.userId} and lower(${users.email}) = lower(${oneTimeTokens.email})))`

function isLive(tokenHash: string, purpose: OneTimeTokenPurpose, now: Date): SQL {
  return and(
    eq(oneTimeTokens.tokenHash, tokenHash),
    eq(oneTimeTokens.purpose, purpose),
    isNull(oneTimeTokens.usedAt),
    gt(oneTimeTokens.expiresAt, now),
    addressIsCurrent,
  )!
}

interface TokenOwnerRow {
  userId: number | null
  subscriberId: number | null
  email: string
}

/**
 * The owner of a live token, without spending it: a cheap check before costly work (hashing a new
 * password). Not live → the same 400 that spending it would give.
 */
export async function findLiveToken(
  db: Db,
  purpose: OneTimeTokenPurpose,
  token: string,
  now: Date,
): Promise<TokenOwnerRow> {
  const tokenHash = await sha256Base64Url(token)
  const [row] = await db
    .select({ userId: oneTimeTokens.userId, subscriberId: oneTimeTokens.subscriberId, email: oneTimeTokens.email })
    .from(oneTimeTokens)
    .where(isLive(tokenHash, purpose, now))
  return row ?? (await refuseToken(db, tokenHash, purpose, now))
}

/**
 * Spends a token and applies its effects in one atomic D1 batch. `effects` get subqueries that
 * yield the token's owner only while the token is unused, unexpired and (for a user's token)
 * mailed to the account's current address, so when the token is not live they change nothing;
 * the final conditional UPDATE spends it, so of two concurrent uses exactly one succeeds.
 * Unknown, used, foreign-purpose or outdated tokens → 400 `token_invalid`; expired ones → 400
 * `token_expired`.
 */
export async function consumeOneTimeToken(
  db: Db,
  purpose: OneTimeTokenPurpose,
  token: string,
  now: Date,
  effects: (live: LiveToken) => BatchItem<'sqlite'>[] = () => [],
): Promise<TokenOwnerRow> {
  const tokenHash = await sha256Base64Url(token)
  const live = isLive(tokenHash, purpose, now)
  const liveColumn = (column: AnyColumn): SQL => sql`(select ${column} from ${oneTimeTokens} where ${live})`
  const liveToken: LiveToken = {
    tokenHash,
    userId: liveColumn(oneTimeTokens.userId),
    subscriberId: liveColumn(oneTimeTokens.subscriberId),
    email: liveColumn(oneTimeTokens.email),
  }
  const spend = db
    .update(oneTimeTokens)
    .set({ usedAt: now })
    .where(live)
    .returning({ userId: oneTimeTokens.userId, subscriberId: oneTimeTokens.subscriberId, email: oneTimeTokens.email })
  const statements: BatchItem<'sqlite'>[] = [...effects(liveToken), spend]
  const results = await db.batch(statements as BatchStatements)
  const [spent] = results[results.length - 1] as TokenOwnerRow[]
  return spent ?? (await refuseToken(db, tokenHash, purpose, now))
}

/**
 * Spends every unused token of `purpose` that a user holds, except `exceptHash` (the one being
 * spent by the same batch): one reset link spends them all, and so do a password or email change.
 */
export function spendTokensOf(
  db: Db,
  userId: number | SQL,
  purpose: OneTimeTokenPurpose,
  now: Date,
  exceptHash?: string,
): BatchItem<'sqlite'> {
  return db
    .update(oneTimeTokens)
    .set({ usedAt: now })
    .where(
      and(
        eq(oneTimeTokens.userId, userId),
        eq(oneTimeTokens.purpose, purpose),
        isNull(oneTimeTokens.usedAt),
        exceptHash === undefined ? undefined : ne(oneTimeTokens.tokenHash, exceptHash),
      ),
    )
}

async function refuseToken(db: Db, tokenHash: string, purpose: OneTimeTokenPurpose, now: Date): Promise<never> {
  const known = await db.query.oneTimeTokens.findFirst({
    columns: { usedAt: true, purpose: true, expiresAt: true },
    where: eq(oneTimeTokens.tokenHash, tokenHash),
  })
  if (known !== undefined && known.purpose === purpose && known.usedAt === null && known.expiresAt <= now) {
    throw new ApiError(400, 'token_expired', 'This link has expired. Ask for a new one.')
  }
  throw new ApiError(400, 'token_invalid', 'This link is invalid or has already been used.')
}

/** Deletes tokens that expired before `cutoff` (the cron). */
export function pruneOneTimeTokens(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(oneTimeTokens).where(lt(oneTimeTokens.expiresAt, cutoff))
}
