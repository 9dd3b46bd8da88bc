import { sql } from 'drizzle-orm'
import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core'

// Timestamps are integer milliseconds since the epoch (drizzle maps them to Date); the API renders
// them as ISO 8601 UTC strings.
const timestamp = (name?: string) =>
  name === undefined ? integer({ mode: 'timestamp_ms' }) : integer(name, { mode: 'timestamp_ms' })

export const users = sqliteTable(
  'users',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    username: text().notNull(),
    email: text().notNull(),
    emailVerified: integer({ mode: 'boolean' }).notNull().default(false),
    isAdmin: integer({ mode: 'boolean' }).notNull().default(false),
    passwordHash: text().notNull(),
    createdAt: timestamp().notNull(),
    updatedAt: timestamp().notNull(),
    lastLoginAt: timestamp(),
  },
  (table) => [
    // Case-insensitive uniqueness: `Alice` cannot shadow `alice`, and emails compare as mail
    // servers do in practice. Lookups use the same lower() expression so they hit these indexes.
    uniqueIndex('users_username_lower_unique').on(sql`lower(${table.username})`),
    uniqueIndex('users_email_lower_unique').on(sql`lower(${table.email})`),
    index('users_created_at_id_idx').on(table.createdAt, table.id),
  ],
)

/**
 * One row per login session, i.e. per refresh-token family. The row is the authority for refresh:
 * only `currentJti` may be rotated; `previousJti` is kept for the reuse grace window.
 */
export const sessions = sqliteTable(
  'sessions',
  {
    sid: text().primaryKey(),
    userId: integer()
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    currentJti: text().notNull(),
    previousJti: text(),
    refreshIssuedAt: timestamp().notNull(),
    refreshExpiresAt: timestamp().notNull(),
    createdAt: timestamp().notNull(),
    rotatedAt: timestamp(),
    revokedAt: timestamp(),
  },
  (table) => [index('sessions_user_id_idx').on(table.userId, table.revokedAt)],
)

export type UserRow = typeof users.$inferSelect
export type SessionRow = typeof sessions.$inferSelect
