import { eq, sql } from 'drizzle-orm'
import { users } from '../../db/schema'
import type { UserRow } from '../../db/schema'
import { ApiError } from '../../errors'
import type { Db } from '../../router'
import { parseId } from '../params'

export async function findUserById(db: Db, id: string | number): Promise<UserRow | undefined> {
  const numericId = typeof id === 'number' ? id : parseId(id)
  if (numericId === null) return undefined
  return db.query.users.findFirst({ where: eq(users.id, numericId) })
}

/** Login identifier: an email (contains @) or a username; both compare case-insensitively. */
export async function findUserByLogin(db: Db, identifier: string): Promise<UserRow | undefined> {
  const normalized = identifier.trim().normalize('NFC')
  // lower(column) = lower(?) matches the expression indexes users_*_lower_unique.
  const where = normalized.includes('@')
    ? sql`lower(${users.email}) = lower(${normalized})`
    : sql`lower(${users.username}) = lower(${normalized})`
  return db.query.users.findFirst({ where })
}

/** The authenticated user's row; a token whose subject no longer exists is refused (API.md point 2). */
export async function requireUserRow(db: Db, userId: string): Promise<UserRow> {
  const user = await findUserById(db, userId)
  if (user === undefined) throw new ApiError(401, 'token_invalid', 'The token names a user that does not exist.')
  return user
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
