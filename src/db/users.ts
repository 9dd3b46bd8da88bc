import { and, eq, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { ApiError } from '../lib/api-error'
import { parseId } from '../lib/ids'
import type { TokenKeys } from '../lib/token-keys'
import type { Db } from './client'
import { keysetCondition, keysetLimit, keysetOrder } from './keyset'
import type { Keyset, KeysetWindow } from './keyset'
import { users } from './schema'
import type { UserRow } from './schema'
import { endAllSessions } from './sessions'
import type { LiveToken } from './one-time-tokens'

const OLDEST_FIRST: Keyset = { sortColumn: users.createdAt, idColumn: users.id, order: 'asc' }

// lower(column) = lower(?) matches the expression indexes users_*_lower_unique.
const emailIs = (email: string | SQL): SQL => sql`lower(${users.email}) = lower(${email})`

export async function findUserById(db: Db, id: string | number): Promise<UserRow | undefined> {
  const numericId = typeof id === 'number' ? id : parseId(id)
  if (numericId === null) return undefined
  return db.query.users.findFirst({ where: eq(users.id, numericId) })
}

/** Login identifier: an email (contains @) or a username; both compare case-insensitively. */
export async function findUserByLogin(db: Db, identifier: string): Promise<UserRow | undefined> {
  const normalized = identifier.trim().normalize('NFC')
  const where = normalized.includes('@') ? emailIs(normalized) : sql`lower(${users.username}) = lower(${normalized})`
  return db.query.users.findFirst({ where })
}

/** The authenticated user's row; a token whose subject no longer exists is refused (docs/API.md, precise point 2). */
export async function loadAuthenticatedUser(db: Db, userId: string): Promise<UserRow> {
  const user = await findUserById(db, userId)
  if (user === undefined) throw new ApiError(401, 'token_invalid', 'The token names a user that does not exist.')
  return user
}

/** One keyset window of public profiles, oldest first: `limit + 1` rows in walk order. */
export function listUsers(db: Db, window: KeysetWindow): Promise<Pick<UserRow, 'id' | 'username' | 'createdAt'>[]> {
  return db
    .select({ id: users.id, username: users.username, createdAt: users.createdAt })
    .from(users)
    .where(keysetCondition(OLDEST_FIRST, window))
    .orderBy(...keysetOrder(OLDEST_FIRST, window))
    .limit(keysetLimit(window))
}

/** The INSERT of a new account, returning its row; run it in a batch with `toConflict` as catch. */
export function insertUser(
  db: Db,
  account: { username: string; email: string; passwordHash: string },
  now: Date,
) {
  return db.insert(users).values({ ...account, createdAt: now, updatedAt: now }).returning()
}

/** A subquery yielding the id of the user with this email: for statements batched with its INSERT. */
export function userIdByEmail(email: string): SQL {
  return sql`(select ${users.id} from ${users} where ${emailIs(email)})`
}

/** Records a login, and stores the password's upgraded hash when it was rehashed. */
export function recordLogin(db: Db, userId: number, now: Date, upgradedHash?: string): BatchItem<'sqlite'> {
  const upgrade = upgradedHash === undefined ? {} : { passwordHash: upgradedHash }
  return db.update(users).set({ lastLoginAt: now, ...upgrade }).where(eq(users.id, userId))
}

export function setPassword(db: Db, userId: number, passwordHash: string, now: Date): BatchItem<'sqlite'> {
  return db.update(users).set({ passwordHash, updatedAt: now }).where(eq(users.id, userId))
}

/**
 * Sets the password of the owner of a live reset token. Following the emailed link proves the
 * address, so it counts as verified too when it is still the account's address.
 */
export function resetPassword(db: Db, live: LiveToken, passwordHash: string, now: Date): BatchItem<'sqlite'> {
  return db
    .update(users)
    .set({
      passwordHash,
      updatedAt: now,
      emailVerified: sql`case when ${emailIs(live.email)} then 1 else ${users.emailVerified} end`,
    })
    .where(eq(users.id, live.userId))
}

/** Verifies the address a live verification token was sent to, and only that one: after an email change, an old link verifies nothing. */
export function markEmailVerified(db: Db, live: LiveToken, now: Date): BatchItem<'sqlite'> {
  return db
    .update(users)
    .set({ emailVerified: true, updatedAt: now })
    .where(and(eq(users.id, live.userId), emailIs(live.email)))
}

export interface UserChanges {
  username: string
  email: string
  emailVerified: boolean
  isAdmin: boolean
}

/** The UPDATE of a profile, returning the row; run it in a batch with `toConflict` as catch. */
export function updateUser(db: Db, userId: number, changes: UserChanges, now: Date) {
  return db
    .update(users)
    .set({ ...changes, updatedAt: now })
    .where(eq(users.id, userId))
    .returning()
}

/** Ends every session of the user (D1 + KV), then deletes the row; posts, sessions and tokens cascade. */
export async function deleteUser(
  db: Db,
  kv: KVNamespace,
  keys: TokenKeys,
  userId: number,
  alsoSids: string[] = [],
): Promise<void> {
  await endAllSessions(db, kv, userId, 'account deleted', new Date(), keys, alsoSids)
  await db.delete(users).where(eq(users.id, userId))
}

/** Maps a unique-index violation from D1 to the contract's 409 codes; anything else is rethrown. */
export function toConflict(err: unknown): never {
  const messages: string[] = []
  for (let cause: unknown = err; cause instanceof Error; cause = cause.cause) messages.push(cause.message)
  // Only the text after SQLite's marker names the index; drizzle's wrapper quotes the whole query.
  const violated = messages.map((m) => /UNIQUE constraint failed:(.*)/.exec(m)?.[1]).find((m) => m !== undefined)
  if (violated !== undefined) {
    if (/username/.test(violated)) throw new ApiError(409, 'username_taken', 'That username is already taken.')
    if (/email/.test(violated)) throw new ApiError(409, 'email_taken', 'That email address is already registered.')
    throw new ApiError(409, 'conflict', 'The resource conflicts with an existing one.')
  }
  throw err
}
