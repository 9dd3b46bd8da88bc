import { and, eq, getTableColumns, inArray, isNull, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { ApiError, userGone } from '../lib/api-error'
import { parseId } from '../lib/ids'
import { usernameKey } from '../lib/usernames'
import type { Db } from './client'
import { violatedUniqueIndex } from './constraint-errors'
import { isolateSql, rowMapperOf } from './isolate-queries'
import { providersOf } from './external-identities'
import { keysetCondition, keysetLimit, keysetOrder } from './keyset'
import type { Keyset, KeysetWindow } from './keyset'
import { countPasskeys, passkeyCountOf } from './passkeys'
import { externalIdentities, users } from './schema'
import type { UserRow } from './schema'
import type { LiveToken } from './one-time-tokens'

const OLDEST_FIRST: Keyset = { sortColumn: users.createdAt, idColumn: users.id, order: 'asc' }

// lower(column) = lower(?) matches the expression indexes users_*_lower_unique.
const emailIs = (email: string | SQL): SQL => sql`lower(${users.email}) = lower(${email})`
const spelledAs = (username: string): SQL => sql`lower(${users.username}) = lower(${username})`

// Rows keyed per statement by keyUsernames(): 3 bound parameters each, under D1's 100.
const BACKFILL_BATCH = 30

/** A user's row by id: a statement to batch. */
export function userRow(db: Db, id: number) {
  return db.select().from(users).where(eq(users.id, id))
}

export async function findUserById(db: Db, id: string | number): Promise<UserRow | undefined> {
  const numericId = typeof id === 'number' ? id : parseId(id)
  if (numericId === null) return undefined
  return db.query.users.findFirst({ where: eq(users.id, numericId) })
}

/** A login identifier as the lookups read it: an email (it contains @) or a username and its key. */
function loginOf(identifier: string): { email: string } | { username: string; key: string } {
  const normalized = identifier.trim().normalize('NFC')
  if (normalized.includes('@')) return { email: normalized }
  return { username: normalized, key: usernameKey(normalized) }
}

/**
 * What findUserByLogin matches an identifier on: two spellings with one key find the same account
 * (an email by SQLite's ASCII-only lower(), a username by its key). For answers that must not tell
 * whether the account exists, such as passkey decoys.
 */
export function loginKeyOf(identifier: string): string {
  const login = loginOf(identifier)
  if ('email' in login) return `email:${login.email.replace(/[A-Z]/g, (letter) => letter.toLowerCase())}`
  return `username:${login.key}`
}

/**
 * The id of the account a login identifier names, as a scalar subquery (NULL for none), for a
 * statement that must not wait for the lookup: findUserByLogin's match on the username key or the
 * email, without its fallback for rows not keyed yet (those have never signed in since keys
 * existed, so they hold nothing a sign-in option could list).
 */
export function userIdByLogin(identifier: string): SQL<number | null> {
  const login = loginOf(identifier)
  const match = 'email' in login ? emailIs(login.email) : eq(users.usernameKey, login.key)
  return sql<number | null>`(select ${users.id} from ${users} where ${match} limit 1)`
}

/**
 * Login identifier: an email (contains @) or a username; both compare case-insensitively, a
 * username by its key (src/lib/usernames.ts). Rows written before keys existed are keyed first; the
 * check for them shares the lookup's round trip (docs/design.md § Usernames).
 */
export async function findUserByLogin(db: Db, identifier: string): Promise<UserRow | undefined> {
  const login = loginOf(identifier)
  if ('email' in login) return db.query.users.findFirst({ where: emailIs(login.email) })
  const { username: normalized, key } = login
  // The key's owner, and the row spelled so (A-Z in any case) if it has no key or was keyed apart.
  const candidates = () =>
    db
      .select()
      .from(users)
      .where(or(eq(users.usernameKey, key), spelledAs(normalized)))
  const [first, unkeyed] = await db.batch([candidates(), unkeyedUsers(db)])
  let found = first
  if (unkeyed.length > 0) {
    await keyUsernames(db, unkeyed)
    if (!found.some((row) => row.usernameKey === key)) found = await candidates()
  }
  // The exact spelling first: of two old accounts that are one name in another case, the one keyed
  // apart still logs in as it is spelled. Then the key's owner.
  return found.find((row) => row.username === normalized) ?? found.find((row) => row.usernameKey === key) ?? found[0]
}

/**
 * Keys the rows written before username keys existed (migration 0005 keyed the ASCII ones), up to
 * `rounds` batches; true when none is left. Run before a username is written (register, rename)
 * so the unique key index sees every name, and by the cron.
 */
export async function backfillUsernameKeys(db: Db, rounds = 5): Promise<boolean> {
  for (let round = 0; round < rounds; round += 1) {
    const rows = await unkeyedUsers(db)
    if (rows.length > 0) await keyUsernames(db, rows)
    if (rows.length < BACKFILL_BATCH) return true
  }
  return false
}

function unkeyedUsers(db: Db) {
  return db
    .select({ id: users.id, username: users.username })
    .from(users)
    .where(isNull(users.usernameKey))
    .orderBy(users.id)
    .limit(BACKFILL_BATCH)
}

/**
 * Gives each row its key, oldest first. A key already taken (two old rows that are one name in
 * another case, which lower() let through) is skipped by OR IGNORE; such a row then gets U+FFFF
 * and its id, a key no username folds to (usernames exclude U+FFFF), so it logs in as spelled.
 */
async function keyUsernames(db: Db, rows: { id: number; username: string }[]): Promise<void> {
  const ids = rows.map((row) => row.id)
  const keys = sql.join(
    rows.map((row) => sql`when ${row.id} then ${usernameKey(row.username)}`),
    sql` `,
  )
  const stillUnkeyed = and(inArray(users.id, ids), isNull(users.usernameKey))
  // Two statements, not a batch (drizzle cannot batch a raw statement with parameters); each
  // touches only rows still without a key, so a concurrent backfill between them does no harm.
  await db.run(
    sql`update or ignore ${users} set ${sql.identifier('username_key')} = case ${users.id} ${keys} end where ${stillUnkeyed}`,
  )
  await db
    .update(users)
    .set({ usernameKey: sql`char(65535) || ${users.id}` })
    .where(stillUnkeyed)
}

/**
 * What a profile change needs, in one round trip: the user's row and linked providers. Rows
 * written before username keys existed are keyed first when any remain (rare), so the unique key
 * index sees every name a new one could shadow.
 */
export async function loadUserForChange(
  db: Db,
  userId: number,
): Promise<{ user: UserRow | undefined; signIns: SignInMethods }> {
  const [found, linked, unkeyed, counted] = await db.batch([
    userRow(db, userId),
    providersOf(db, userId),
    unkeyedUsers(db),
    countPasskeys(db, userId),
  ])
  if (unkeyed.length > 0) await backfillUsernameKeys(db)
  return { user: found[0], signIns: { providers: linked.map((row) => row.provider), passkeys: counted[0]?.count ?? 0 } }
}

/** The ways an account signs in besides its password, as its owner's view shows them. */
export interface SignInMethods {
  /** The linked OIDC providers, sorted. */
  providers: string[]
  /** How many passkeys. */
  passkeys: number
}

export const NO_SIGN_INS: SignInMethods = { providers: [], passkeys: 0 }

/** The authenticated user's row and linked sign-in providers, in one round trip (refused as loadAuthenticatedUser). */
// The user and their linked providers in one statement, its SQL built once per isolate: this is
// the read behind every signed-in GET /users/me (src/db/isolate-queries.ts).
const privateUserSql = isolateSql((db) =>
  db
    .select({
      ...getTableColumns(users),
      // Qualified by hand: in a one-table select drizzle writes columns without their table, and
      // an unqualified "id" here would name the identities' own column if they ever had one.
      providers:
        sql`(SELECT json_group_array(${sql.raw('"ei"."provider"')}) FROM ${externalIdentities} AS ${sql.raw('"ei"')} WHERE ${sql.raw('"ei"."user_id"')} = ${sql.raw('"users"."id"')})`.as(
          'providers',
        ),
      passkeys: passkeyCountOf(sql.raw('"users"."id"')).as('passkeys'),
    })
    .from(users)
    .where(eq(users.id, sql.placeholder('id'))),
)
const toUserRow = rowMapperOf(users)

export async function loadPrivateUser(db: Db, userId: number): Promise<{ user: UserRow; signIns: SignInMethods }> {
  const raw = await db.$client.prepare(privateUserSql()).bind(userId).first<Record<string, unknown>>()
  if (raw === null) throw userGone()
  // Sorted here: json_group_array keeps no order SQLite promises.
  const providers = (JSON.parse(String(raw.providers)) as string[]).sort()
  return { user: toUserRow(raw), signIns: { providers, passkeys: Number(raw.passkeys) } }
}

/** The authenticated user's row; a token whose subject no longer exists is refused (docs/API.md, precise point 2). */
export async function loadAuthenticatedUser(db: Db, userId: number): Promise<UserRow> {
  const user = await findUserById(db, userId)
  if (user === undefined) throw userGone()
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
  account: { username: string; email: string; passwordHash: string; emailVerified?: boolean },
  now: Date,
) {
  return db
    .insert(users)
    .values({ ...account, usernameKey: usernameKey(account.username), createdAt: now, updatedAt: now })
    .returning()
}

/**
 * What creating an account for a sign-in provider needs, in one round trip: whether the email
 * belongs to an account, and the first of `candidates` no account holds (by key or lower()).
 * Rows written before username keys existed are keyed first when any remain (rare).
 */
export async function signUpChecks(
  db: Db,
  email: string,
  candidates: string[],
): Promise<{ emailTaken: boolean; username: string | undefined }> {
  const keys = candidates.map(usernameKey)
  const lowered = candidates.map((name) => name.toLowerCase())
  const taken = () =>
    db
      .select({ key: users.usernameKey, lowered: sql<string>`lower(${users.username})` })
      .from(users)
      .where(or(inArray(users.usernameKey, keys), inArray(sql`lower(${users.username})`, lowered)))
  const [owner, first, unkeyed] = await db.batch([
    db.select({ id: users.id }).from(users).where(emailIs(email)),
    taken(),
    unkeyedUsers(db),
  ])
  let rows = first
  if (unkeyed.length > 0) {
    await backfillUsernameKeys(db)
    rows = await taken()
  }
  const takenKeys = new Set(rows.map((row) => row.key))
  const takenLowered = new Set(rows.map((row) => row.lowered))
  const username = candidates.find((_, index) => !takenKeys.has(keys[index]!) && !takenLowered.has(lowered[index]!))
  return { emailTaken: owner.length > 0, username }
}

/** A subquery yielding the id of the user with this email: for statements batched with its INSERT. */
export function userIdByEmail(email: string): SQL {
  return sql`(select ${users.id} from ${users} where ${emailIs(email)})`
}

/** Records that every session of the user ended at `now` (`userId` may be a subquery). */
export function markAllSessionsEnded(db: Db, userId: number | SQL, now: Date): BatchItem<'sqlite'> {
  return db.update(users).set({ allSessionsEndedAt: now }).where(eq(users.id, userId))
}

/** Records a login, and stores the password's upgraded hash when it was rehashed. */
export function recordLogin(
  db: Db,
  userId: number,
  now: Date,
  upgradedHash?: string,
  checked?: CheckedAccount,
): BatchItem<'sqlite'> {
  const upgrade = upgradedHash === undefined ? {} : { passwordHash: upgradedHash }
  return db
    .update(users)
    .set({ lastLoginAt: now, ...upgrade })
    .where(checked === undefined ? eq(users.id, userId) : accountUnchanged(userId, checked))
}

/** What a password login checked of an account read at a replica: it must still be so at the primary. */
export interface CheckedAccount {
  passwordHash: string
}

/**
 * The account still has the password hash the login checked and no second factor. A login that
 * read the account at a replica guards its writes with this, at the primary: a replica behind a
 * password change or an enrolment must not let the old password in, or past the second factor.
 */
export function accountUnchanged(userId: number, checked: CheckedAccount): SQL {
  return and(eq(users.id, userId), eq(users.passwordHash, checked.passwordHash), eq(users.mfaEnabled, false)) as SQL
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

/**
 * The UPDATE of the given columns only (a username with its key), returning the row; run it in a
 * batch with `toConflict` as catch.
 */
export function updateUser(db: Db, userId: number, changes: Partial<UserChanges>, now: Date) {
  return db
    .update(users)
    .set({
      ...changes,
      ...(changes.username === undefined ? {} : { usernameKey: usernameKey(changes.username) }),
      updatedAt: now,
    })
    .where(eq(users.id, userId))
    .returning()
}

/** The DELETE of a user; posts, sessions, identities and tokens cascade. */
export function deleteUserRow(db: Db, userId: number): BatchItem<'sqlite'> {
  return db.delete(users).where(eq(users.id, userId))
}

/** Maps a unique-index violation from D1 to the contract's 409 codes; anything else is rethrown. */
export function toConflict(err: unknown): never {
  const violated = violatedUniqueIndex(err)
  if (violated !== undefined) {
    if (/username/.test(violated)) throw new ApiError(409, 'username_taken', 'That username is already taken.')
    if (/email/.test(violated)) throw new ApiError(409, 'email_taken', 'That email address is already registered.')
    throw new ApiError(409, 'conflict', 'The resource conflicts with an existing one.')
  }
  throw err
}
