import { applyD1Migrations } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { beforeAll, describe, expect, it } from 'vitest'
import { sha256Base64Url } from '../src/lib/hmac'
import { hashPassword, verifyPassword } from '../src/lib/passwords'
import { hashRecoveryCode, newRecoveryCodes } from '../src/lib/recovery-codes'
import { seal, secretBoxKey } from '../src/lib/secret-box'
import { newTotpSecret } from '../src/lib/totp'
import { usernameKey } from '../src/lib/usernames'
import { apiWithEnv, decodeJwt, mintToken } from './helpers'
import type { TokenPair } from './helpers'
import { SoftAuthenticator } from './webauthn-authenticator'

// A migration never loses data. UPGRADE_DB (vitest.config.ts) is migrated up to a step that has
// landed in production, filled with rows as the code of that version wrote them (raw SQL, every
// column of every table of that schema), snapshotted, migrated to the newest version and
// snapshotted again: every old row must still be there with every old column's value unchanged,
// a new column must hold its default unless the migration is declared to backfill it (and then
// the backfilled value), and no new table may have rows. Then the app itself runs against the
// upgraded database: the old users log in (password, and password plus a recovery code), the old
// sessions' refresh tokens are still current (or still revoked), the old posts are published.
//
// The trap this guards against is drizzle-kit's table recreate (CREATE __new_x; INSERT … SELECT;
// DROP x; RENAME): D1 enforces foreign keys and ignores `PRAGMA foreign_keys = OFF` inside the
// batch a migration runs in, so dropping `users` or `posts` cascades to every child row, and a
// column left out of the INSERT … SELECT is silently reset.

const migrations = env.TEST_MIGRATIONS
const db = env.UPGRADE_DB
// The app on the upgraded database. Built once: config and keys are memoised per env object.
const upgradedEnv = { ...env, DB: env.UPGRADE_DB }

/** The index of a migration in TEST_MIGRATIONS (the journal's order) by its tag, `0010_post_life_cycle`. */
function migrationIndex(tag: string): number {
  const index = migrations.findIndex((migration) => migration.name.replace(/\.sql$/, '') === tag)
  if (index === -1) throw new Error(`no migration ${tag} in ${migrations.map((m) => m.name).join(', ')}`)
  return index
}

const tagOf = (index: number): string => migrations[index]!.name.replace(/\.sql$/, '')
const NEWEST = migrations.length - 1
/** The oldest schema the harness fills (every step from it on has landed). */
const OLDEST_FILLED = migrationIndex('0009_batch_guards')
/** The newest schema fill() knows the columns of; a step filled at a later one needs fill() extended. */
const NEWEST_FILLED = migrationIndex('0012_passkeys')

// ---------------------------------------------------------------------------------------------
// What each migration is meant to do to existing rows. Everything not named here must stay as it
// was; a column a migration adds must hold its declared default on the old rows.

type Row = Record<string, unknown>

const BACKFILLS: Record<string, Record<string, Record<string, (old: Row) => unknown>>> = {
  // Every existing post was public from its creation and gets the stable slug post-<id>.
  '0010_post_life_cycle': {
    posts: { published_at: (old) => old.created_at, slug: (old) => `post-${old.id}` },
  },
}

// Indexes a migration is declared to rebuild, with the definition they must have afterwards
// (any other index or trigger must come out unchanged).
const REDEFINED_INDEXES: Record<string, Record<string, string>> = {
  // Published and scheduled posts only, so a drafts list walks the drafts index.
  '0011_newsletters': {
    posts_published_at_id_idx:
      'CREATE INDEX `posts_published_at_id_idx` ON `posts` (`published_at`,`id`) WHERE published_at is not null',
  },
}

// ---------------------------------------------------------------------------------------------
// The database: reset, migrate, snapshot.

const isVirtual = (sql: string | null): boolean => sql !== null && /^CREATE VIRTUAL TABLE/i.test(sql)

async function userTables(): Promise<{ name: string; sql: string | null }[]> {
  const { results } = await db
    .prepare(
      `SELECT name, sql FROM sqlite_master WHERE type = 'table'
       AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'
       ORDER BY name`,
    )
    .all<{ name: string; sql: string | null }>()
  return results
}

/**
 * Drops every table (with its indexes and triggers) and d1_migrations, so each case starts from
 * an empty database. Virtual tables go first (they own their shadow tables); a table still
 * referenced under a constraint that refuses the implicit delete is retried after its children.
 */
async function resetUpgradeDb(): Promise<void> {
  for (let pass = 0; pass < 10; pass++) {
    const tables = await userTables()
    if (tables.length === 0) break
    const ordered = [...tables.filter((t) => isVirtual(t.sql)), ...tables.filter((t) => !isVirtual(t.sql))]
    for (const { name } of ordered) {
      try {
        await db.prepare(`DROP TABLE IF EXISTS "${name}"`).run()
      } catch {
        // A parent whose children are still there: dropped on a later pass.
      }
    }
  }
  expect(await userTables()).toEqual([])
}

/** Applies the migrations up to and including `index` (those already applied are skipped). */
async function migrateTo(index: number): Promise<void> {
  await applyD1Migrations(db, migrations.slice(0, index + 1))
  const { results } = await db.prepare('SELECT name FROM d1_migrations ORDER BY id').all<{ name: string }>()
  expect(results.map((row) => row.name)).toEqual(migrations.slice(0, index + 1).map((m) => m.name))
}

interface Column {
  name: string
  pk: number
  dflt_value: string | null
}

interface TableSnapshot {
  columns: Column[]
  /** What identifies a row: the primary key's columns, else the rowid (`__rowid`). */
  key: string[]
  rows: Row[]
}

interface Snapshot {
  tables: Map<string, TableSnapshot>
  /** Indexes and triggers by name: their SQL (null for an automatic index). */
  schema: Map<string, string | null>
}

/**
 * Every table but D1's own and the migrations ledger, FTS5's shadow tables and sqlite_sequence
 * included, and every index and trigger (drizzle-kit's recreate knows nothing of hand-written
 * triggers such as posts_fts's: they would go with the dropped table).
 */
async function snapshot(): Promise<Snapshot> {
  const { results: objects } = await db
    .prepare(
      `SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')
       AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND tbl_name <> 'd1_migrations' ORDER BY name`,
    )
    .all<{ type: string; name: string; sql: string | null }>()
  const tables = new Map<string, TableSnapshot>()
  for (const { name, sql } of objects.filter((o) => o.type === 'table')) {
    const { results: columns } = await db.prepare(`PRAGMA table_info("${name}")`).all<Column>()
    const pk = columns.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk)
    const key = name === 'sqlite_sequence' ? ['name'] : pk.length > 0 ? pk.map((c) => c.name) : ['__rowid']
    const withoutRowid = sql !== null && /WITHOUT\s+ROWID/i.test(sql)
    const select = key[0] === '__rowid' && !withoutRowid ? 'rowid AS __rowid, *' : '*'
    const order = key[0] === '__rowid' ? 'rowid' : key.map((c) => `"${c}"`).join(', ')
    // The migrations ledger's own AUTOINCREMENT counter moves with every migration applied.
    const where = name === 'sqlite_sequence' ? ` WHERE name <> 'd1_migrations'` : ''
    const { results: rows } = await db.prepare(`SELECT ${select} FROM "${name}"${where} ORDER BY ${order}`).all<Row>()
    tables.set(name, { columns, key, rows })
  }
  const schema = new Map(objects.filter((o) => o.type !== 'table').map((o) => [o.name, o.sql]))
  return { tables, schema }
}

const keyOf = (row: Row, key: string[]): string => JSON.stringify(key.map((column) => row[column]))

/** The value SQLite gives an added column on existing rows: its declared default, evaluated. */
async function defaultOf(column: Column): Promise<unknown> {
  if (column.dflt_value === null) return null
  const row = await db.prepare(`SELECT (${column.dflt_value}) AS v`).first<{ v: unknown }>()
  return row!.v
}

interface TableReport {
  dropped?: boolean
  missingColumns?: string[]
  rowCount: number
  rows?: Row[]
}

/**
 * What the database holds after the upgrade (`actual`) against what it must hold (`expected`),
 * per table: every row of `before` under its key, every old column unchanged, a new column at its
 * default or, when one of `applied` backfills it, the backfilled value; tables added meanwhile
 * empty; every old index and trigger still there, unchanged. One object, so a failure shows
 * everything that was lost at once.
 */
async function dataLossReport(before: Snapshot, after: Snapshot, applied: string[]) {
  const actual: Record<string, TableReport> = {}
  const expected: Record<string, TableReport> = {}
  for (const [table, old] of before.tables) {
    const oldNames = old.columns.map((c) => c.name)
    expected[table] = { dropped: false, missingColumns: [], rowCount: old.rows.length }
    const now = after.tables.get(table)
    if (now === undefined) {
      actual[table] = { dropped: true, missingColumns: oldNames, rowCount: 0 }
      continue
    }
    const newNames = now.columns.map((c) => c.name)
    actual[table] = {
      dropped: false,
      missingColumns: oldNames.filter((name) => !newNames.includes(name)),
      rowCount: now.rows.length,
    }
    const added = now.columns.filter((c) => !oldNames.includes(c.name))
    const fills: Record<string, (row: Row) => unknown> = {}
    for (const tag of applied) Object.assign(fills, BACKFILLS[tag]?.[table])
    const values = new Map<string, (row: Row) => unknown>()
    for (const column of added) {
      const fill = fills[column.name]
      const value = fill === undefined ? await defaultOf(column) : undefined
      values.set(column.name, fill ?? (() => value))
    }
    const byKey = new Map(now.rows.map((row) => [keyOf(row, old.key), row]))
    const names = [...oldNames, ...added.map((c) => c.name)]
    actual[table]!.rows = old.rows.map((row) => {
      const later = byKey.get(keyOf(row, old.key))
      return later === undefined
        ? { missing: keyOf(row, old.key) }
        : Object.fromEntries(names.map((n) => [n, later[n]]))
    })
    expected[table]!.rows = old.rows.map((row) => ({
      ...Object.fromEntries(oldNames.map((name) => [name, row[name]])),
      ...Object.fromEntries(added.map((c) => [c.name, values.get(c.name)!(row)])),
    }))
  }
  for (const [table, now] of after.tables) {
    if (before.tables.has(table)) continue
    actual[table] = { rowCount: now.rows.length }
    expected[table] = { rowCount: 0 }
  }
  const schemaNow = Object.fromEntries(
    [...before.schema.keys()].map((name) => [name, after.schema.has(name) ? after.schema.get(name) : 'MISSING']),
  )
  const schemaExpected = Object.fromEntries(before.schema)
  for (const tag of applied) {
    for (const [name, sql] of Object.entries(REDEFINED_INDEXES[tag] ?? {})) {
      if (name in schemaExpected) schemaExpected[name] = sql
    }
  }
  return {
    actual: { tables: actual, indexesAndTriggers: schemaNow },
    expected: { tables: expected, indexesAndTriggers: schemaExpected },
  }
}

async function expectNoDataLost(before: Snapshot, after: Snapshot, applied: string[]): Promise<void> {
  const { actual, expected } = await dataLossReport(before, after, applied)
  expect(actual, `after ${applied.join(', ')}`).toEqual(expected)
}

async function expectSoundDatabase(): Promise<void> {
  expect((await db.prepare('PRAGMA foreign_key_check').all()).results).toEqual([])
  // integrity_check is refused by workerd's SQLite authorizer (SQLITE_AUTH); quick_check is the
  // same minus the index-versus-table comparison (and it reports what it finds, not a throw).
  expect((await db.prepare('PRAGMA quick_check').all()).results).toEqual([{ quick_check: 'ok' }])
  // FTS5: the index is consistent, and consistent with its external content table (posts).
  await db.prepare(`INSERT INTO posts_fts(posts_fts, rank) VALUES ('integrity-check', 1)`).run()
}

// ---------------------------------------------------------------------------------------------
// Rows as each version of the code wrote them.

/** The time the file was loaded; rows are dated from T0, 20 days before (sessions stay within their 30-day limit). */
const NOW = Date.now()
const DAY = 86_400_000
const T0 = NOW - 20 * DAY

// One PBKDF2 hash per kind of user, made once by the app's own hashing (each costs ~the same as a
// login): the rows of every round carry them, and each round's usernames differ.
const PASSWORDS = {
  ada: 'correct horse battery staple',
  grace: 'Tr0ub4dor&3 but longer',
  odon: 'pässwörd mit Ümläuten ✓',
  linus: 'never used: signs in with Google',
} as const
const hashes: Record<keyof typeof PASSWORDS, string> = { ada: '', grace: '', odon: '', linus: '' }

interface FilledUser {
  id: number
  username: string
  password: string
  hash: string
}

/** What a round wrote that the checks after the upgrade use. */
interface Filled {
  users: FilledUser[]
  ada: { id: number; username: string; password: string }
  grace: { id: number; username: string; password: string; unusedRecoveryCode: string }
  liveSession: { sid: string; userId: number; jti: string }
  revokedSession: { sid: string; userId: number; jti: string }
  legacySession: { sid: string; userId: number; jti: string }
  /** Posts written before 0010 (no slug, no published_at), with a word only its title has. */
  oldPosts: { id: number; word: string; createdAt: number }[]
  /** From 0012 on: ada's passkey, whose authenticator signs in after the upgrade. */
  passkey?: { userId: number; authenticator: SoftAuthenticator }
}

function insert(table: string, row: Row): D1PreparedStatement {
  const columns = Object.keys(row)
  return db
    .prepare(
      `INSERT INTO "${table}" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`,
    )
    .bind(...columns.map((c) => row[c] ?? null))
}

// MFA_ENCRYPTION_KEY of vitest.config.ts: factors are sealed as the app seals them.
const mfaKey = secretBoxKey('test-only-mfa-encryption-key-of-32-bytes!!')

/**
 * Writes, at schema `version` (the index of the last migration applied), rows into every table
 * that exists then, every column given a value somewhere; round `r` keeps ids and keys apart.
 */
async function fill(version: number, r: number): Promise<Filled> {
  if (version < OLDEST_FILLED || version > NEWEST_FILLED) throw new Error(`fill() knows no schema ${version}`)
  const id = (n: number) => r * 100 + n
  const t = (minutes: number) => T0 + r * DAY + minutes * 60_000
  const statements: D1PreparedStatement[] = []
  const push = (table: string, row: Row) => statements.push(insert(table, row))

  // users: a plain account; an administrator with a confirmed second factor; a non-ASCII name
  // written before username keys (key NULL, as 0005 left it), unverified, enrolling a factor; an
  // account made by a first sign-in with Google.
  const ada: FilledUser = { id: id(1), username: `ada_r${r}`, password: PASSWORDS.ada, hash: hashes.ada }
  const grace = { id: id(2), username: `Grace_R${r}`, password: PASSWORDS.grace, hash: hashes.grace }
  const odon = { id: id(3), username: `Ödön_r${r}`, password: PASSWORDS.odon, hash: hashes.odon }
  const linus = { id: id(4), username: `linus.g_r${r}`, password: PASSWORDS.linus, hash: hashes.linus }
  const user = (u: FilledUser, extra: Row) => ({
    id: u.id,
    username: u.username,
    email: `${u.username.toLowerCase()}@example.com`,
    email_verified: 1,
    is_admin: 0,
    password_hash: u.hash,
    created_at: t(0),
    updated_at: t(5),
    last_login_at: null,
    username_key: usernameKey(u.username),
    mfa_enabled: 0,
    all_sessions_ended_at: null,
    ...extra,
  })
  push('users', user(ada, { last_login_at: t(60) }))
  push('users', user(grace, { is_admin: 1, mfa_enabled: 1, all_sessions_ended_at: t(30), last_login_at: t(61) }))
  push('users', user(odon, { email: `Odon.R${r}@Example.com`, email_verified: 0, username_key: null }))
  push('users', user(linus, { email: `linus.g.r${r}@gmail.com`, last_login_at: t(62) }))

  const jti = (n: number) => `jti-${r}-${n}-${crypto.randomUUID()}`
  const liveSession = { sid: crypto.randomUUID(), userId: ada.id, jti: jti(1) }
  const revokedSession = { sid: crypto.randomUUID(), userId: ada.id, jti: jti(2) }
  const legacySession = { sid: crypto.randomUUID(), userId: grace.id, jti: jti(3) }
  const expiresAt = NOW + 20 * DAY
  push('sessions', {
    sid: liveSession.sid,
    user_id: ada.id,
    current_jti: liveSession.jti,
    previous_jti: jti(4),
    refresh_issued_at: t(120),
    refresh_expires_at: expiresAt,
    created_at: t(60),
    rotated_at: t(120),
    revoked_at: null,
    device_label: 'Firefox on macOS',
    login_country: 'DE',
    login_colo: 'FRA',
    last_used_at: t(120),
    last_country: 'FR',
    last_colo: 'CDG',
    authenticated_at: t(90),
  })
  push('sessions', {
    sid: revokedSession.sid,
    user_id: ada.id,
    current_jti: revokedSession.jti,
    refresh_issued_at: t(50),
    refresh_expires_at: expiresAt,
    created_at: t(50),
    revoked_at: t(55),
    device_label: 'Safari on iOS',
    login_country: 'US',
    login_colo: 'SJC',
  })
  // As written before devices (0006) and step-up (0008): only the original columns.
  push('sessions', {
    sid: legacySession.sid,
    user_id: grace.id,
    current_jti: legacySession.jti,
    refresh_issued_at: t(61),
    refresh_expires_at: expiresAt,
    created_at: t(61),
  })

  const graceSecret = newTotpSecret()
  push('mfa_factors', {
    user_id: grace.id,
    secret_sealed: await seal(graceSecret, await mfaKey, String(grace.id)),
    created_at: t(10),
    confirmed_at: t(11),
    last_step: Math.floor(t(11) / 30_000),
    failed_attempts: 2,
    failed_window_start: t(40),
    added_while_unverified: 0,
  })
  push('mfa_factors', {
    user_id: odon.id,
    secret_sealed: await seal(newTotpSecret(), await mfaKey, String(odon.id)),
    created_at: t(12),
    failed_attempts: 0,
    added_while_unverified: 1,
  })
  const [usedCode, unusedRecoveryCode] = newRecoveryCodes(2) as [string, string]
  push('mfa_recovery_codes', {
    code_hash: await hashRecoveryCode(usedCode),
    user_id: grace.id,
    created_at: t(11),
    used_at: t(45),
  })
  push('mfa_recovery_codes', {
    code_hash: await hashRecoveryCode(unusedRecoveryCode),
    user_id: grace.id,
    created_at: t(11),
  })
  push('mfa_challenges', { jti: jti(5), user_id: grace.id, attempts: 1, used_at: t(61), expires_at: t(66) })
  push('mfa_challenges', { jti: jti(6), user_id: grace.id, attempts: 4, expires_at: t(71) })

  push('external_identities', {
    provider: 'google',
    sub: `1098${r}7654321`,
    user_id: linus.id,
    email: `linus.g.r${r}@gmail.com`,
    created_at: t(0),
    added_while_unverified: 0,
  })
  push('external_identities', {
    provider: 'apple',
    sub: `001${r}.abc.1234`,
    user_id: odon.id,
    email: `x${r}@privaterelay.appleid.com`,
    created_at: t(20),
    added_while_unverified: 1,
  })
  push('spent_id_tokens', { token_hash: await sha256Base64Url(`id-token-${r}-1`), expires_at: t(60) })
  push('spent_id_tokens', { token_hash: await sha256Base64Url(`id-token-${r}-2`), expires_at: NOW + DAY })

  // posts: before 0010 no slug or publication time; from 0010 on a published post with a chosen
  // slug, a draft, a scheduled one, and one inserted without a slug (the fallback trigger's case).
  const oldPosts: Filled['oldPosts'] = []
  const post = (n: number, author: number, title: string, extra: Row = {}) => {
    push('posts', {
      id: id(n),
      author_id: author,
      title,
      body: `${title}: the body, with a second line\nand “quotes”, <html> & emoji 🚀.`,
      created_at: t(100 + n),
      updated_at: t(200 + n),
      ...extra,
    })
  }
  if (version < migrationIndex('0010_post_life_cycle')) {
    const titles: [number, number, string][] = [
      [11, ada.id, `Café crème round${r}first`],
      [12, grace.id, `Release notes round${r}second`],
      [13, odon.id, `Über Ödön round${r}third`],
    ]
    for (const [n, author, title] of titles) {
      post(n, author, title)
      oldPosts.push({ id: id(n), word: `round${r}${['first', 'second', 'third'][n - 11]}`, createdAt: t(100 + n) })
    }
  } else {
    post(21, ada.id, `Published r${r}`, { slug: `published-r${r}`, published_at: t(130) })
    post(22, ada.id, `Draft r${r}`, { slug: `draft-r${r}`, published_at: null })
    post(23, grace.id, `Scheduled r${r}`, { slug: `scheduled-r${r}`, published_at: NOW + 3 * DAY })
    post(24, grace.id, `Seeded r${r}`, { published_at: t(140) })
    post(25, odon.id, `Dead letters r${r}`, { slug: `dead-letters-r${r}`, published_at: t(150) })
  }

  // subscribers in every status of the version, their tokens, and the outbox in every status.
  const statuses =
    version >= migrationIndex('0011_newsletters')
      ? ['pending', 'active', 'unsubscribed', 'bounced', 'complained']
      : ['pending', 'active', 'unsubscribed']
  for (const [i, status] of statuses.entries()) {
    push('subscribers', {
      id: id(31 + i),
      email: `Reader.${status}.r${r}@example.org`,
      name: i % 2 === 0 ? `Reader ${status}` : null,
      status,
      created_at: t(300 + i),
      updated_at: t(310 + i),
      confirmed_at: status === 'pending' ? null : t(305 + i),
      unsubscribed_at: status === 'unsubscribed' ? t(320) : null,
      unsubscribe_token_hash: await sha256Base64Url(`unsubscribe-${r}-${status}`),
    })
  }
  const token = async (n: number, row: Row) =>
    push('one_time_tokens', { token_hash: await sha256Base64Url(`one-time-${r}-${n}`), ...row })
  await token(1, {
    purpose: 'email_verification',
    user_id: odon.id,
    email: `Odon.R${r}@Example.com`,
    created_at: t(1),
    expires_at: t(1) + DAY,
  })
  await token(2, {
    purpose: 'password_reset',
    user_id: ada.id,
    email: `ada_r${r}@example.com`,
    created_at: t(2),
    expires_at: t(62),
    used_at: t(10),
  })
  await token(3, {
    purpose: 'subscription_confirmation',
    subscriber_id: id(31),
    email: `Reader.pending.r${r}@example.org`,
    created_at: t(300),
    expires_at: t(300) + DAY,
  })
  const mail = (n: number, status: string, extra: Row) =>
    push('email_outbox', {
      id: id(40 + n),
      recipient: `ada_r${r}@example.com`,
      subject: `Subject ${n}`,
      text: `Hello,\n\nmessage ${n} of round ${r}.`,
      headers: JSON.stringify({ 'List-Unsubscribe': `<https://edgepress.test/u/${r}${n}>` }),
      status,
      attempts: 0,
      next_attempt_at: t(400 + n),
      created_at: t(400 + n),
      ...extra,
    })
  mail(1, 'pending', { headers: '{}' })
  mail(2, 'sending', { attempts: 1 })
  mail(3, 'sent', { attempts: 1, sent_at: t(410) })
  mail(4, 'failed', { attempts: 5, last_error: '550 5.1.1 mailbox unavailable' })

  if (version >= migrationIndex('0011_newsletters')) {
    const newsletter = (n: number, postN: number, status: string, extra: Row) =>
      push('newsletters', {
        id: id(50 + n),
        post_id: id(postN),
        status,
        sent: 0,
        failed: 0,
        skipped: 0,
        created_by: grace.id,
        api_origin: 'https://edgepress.test',
        snapshot_after_id: 0,
        created_at: t(500 + n),
        ...extra,
      })
    const content = (postN: number) => ({
      subject: `Post ${postN} r${r}`,
      text: `The body of post ${postN}.`,
      post_url: `https://blog.example.com/${id(postN)}`,
    })
    newsletter(1, 23, 'scheduled', { scheduled_for: NOW + 3 * DAY })
    newsletter(2, 21, 'sending', { ...content(21), started_at: t(510), snapshot_after_id: id(32) })
    newsletter(3, 24, 'sent', {
      ...content(24),
      recipients: 3,
      sent: 1,
      failed: 1,
      skipped: 1,
      started_at: t(511),
      completed_at: t(520),
    })
    newsletter(4, 22, 'cancelled', { created_by: null, scheduled_for: t(530), completed_at: t(531) })
    newsletter(5, 25, 'failed', { ...content(25), recipients: 1, failed: 1, started_at: t(512), completed_at: t(540) })
    const delivery = (n: number, subscriber: number, batchNo: number, status: string, extra: Row = {}) =>
      push('newsletter_deliveries', {
        newsletter_id: id(50 + n),
        subscriber_id: id(subscriber),
        email: `Reader.${statuses[subscriber - 31]}.r${r}@example.org`,
        batch_no: batchNo,
        status,
        updated_at: t(515),
        ...extra,
      })
    delivery(2, 32, 0, 'sending')
    delivery(2, 33, 1, 'queued')
    delivery(3, 32, 0, 'sent')
    delivery(3, 34, 0, 'failed', { error: '422 invalid recipient' })
    delivery(3, 35, 0, 'skipped')
    delivery(5, 32, 0, 'failed', { error: 'dead-lettered after 5 attempts' })
    push('email_events', { webhook_id: `msg_${r}_bounce`, type: 'email.bounced', received_at: t(521) })
    push('email_events', { webhook_id: `msg_${r}_complaint`, type: 'email.complained', received_at: t(522) })
  }

  let passkey: Filled['passkey']
  if (version >= migrationIndex('0012_passkeys')) {
    // ada signs in with a counting passkey (last used, counter 3); odon's synced one was added
    // before his address was verified; a usernameless and a registration challenge are pending.
    const authenticator = await SoftAuthenticator.create({ counting: true })
    const handle = `handle-ada-r${r}`
    authenticator.userHandle = handle
    await authenticator.assert({ challenge: 'AAAA' }, { signCount: 3 })
    push('passkey_user_handles', { user_id: ada.id, handle })
    push('passkey_user_handles', { user_id: odon.id, handle: `handle-odon-r${r}` })
    const key = (n: number, owner: FilledUser, extra: Row) =>
      push('passkeys', {
        id: id(60 + n),
        user_id: owner.id,
        algorithm: -7,
        name: `Passkey ${n} r${r}`,
        transports: '["hybrid","internal"]',
        created_at: t(600 + n),
        ...extra,
      })
    key(1, ada, {
      credential_id: authenticator.credentialId,
      public_key: JSON.stringify(await authenticator.publicJwk()),
      sign_count: 3,
      backed_up: 0,
      last_used_at: t(610),
      added_while_unverified: 0,
    })
    key(2, odon, {
      credential_id: `credential-odon-r${r}`,
      public_key: '{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}',
      algorithm: -8,
      sign_count: 0,
      backed_up: 1,
      last_used_at: null,
      added_while_unverified: 1,
    })
    push('passkey_challenges', {
      id: `challenge-login-r${r}`,
      challenge: 'Y2hhbGxlbmdl',
      purpose: 'login',
      user_id: null,
      expires_at: NOW + DAY,
    })
    push('passkey_challenges', {
      id: `challenge-register-r${r}`,
      challenge: 'cmVnaXN0ZXI',
      purpose: 'register',
      user_id: ada.id,
      expires_at: NOW + DAY,
    })
    passkey = { userId: ada.id, authenticator }
  }

  await db.batch(statements)
  return {
    passkey,
    users: [ada, grace, odon, linus],
    ada,
    grace: { ...grace, unusedRecoveryCode },
    liveSession,
    revokedSession,
    legacySession,
    oldPosts,
  }
}

/**
 * The fill is complete: every table of the schema has rows (batch_guards never holds one) and
 * every column a non-null value in some row, so the comparison after the upgrade covers them all.
 */
async function expectEveryColumnFilled(): Promise<void> {
  const empty: string[] = []
  for (const [table, { columns, rows }] of (await snapshot()).tables) {
    if (table === 'batch_guards' || table === 'sqlite_sequence' || table.startsWith('posts_fts_')) continue
    if (rows.length === 0) empty.push(table)
    for (const { name } of columns) if (!rows.some((row) => row[name] !== null)) empty.push(`${table}.${name}`)
  }
  expect(empty, 'tables or columns the fill left empty').toEqual([])
}

// ---------------------------------------------------------------------------------------------
// After the upgrade: the app, on the upgraded database, with the old rows.

function call(method: string, path: string, body?: unknown, token?: string): Promise<Response> {
  return apiWithEnv(upgradedEnv, method, path, body, token)
}

async function expectAppWorksWithOldRows(filled: Filled[]): Promise<void> {
  // Every stored hash still verifies (and only with its password); the rounds share the four
  // hashes, so each is checked once (PBKDF2 at the production cost is most of this test's time).
  const users = new Map(filled.flatMap((round) => round.users).map((u) => [u.hash, u]))
  for (const u of users.values()) expect(await verifyPassword(u.password, u.hash), u.username).toBe(true)
  const someone = filled[0]!.users[0]!
  expect(await verifyPassword(`${someone.password}!`, someone.hash)).toBe(false)
  for (const round of filled) {
    const ada = await call('POST', '/auth/token', { username: round.ada.username, password: round.ada.password })
    expect(ada.status, await ada.clone().text()).toBe(200)
    const { access_token: token } = (await ada.json()) as TokenPair

    // The second factor and its recovery codes came through: password, then an unused code.
    const first = await call('POST', '/auth/token', {
      username: round.grace.username.toUpperCase(),
      password: round.grace.password,
    })
    expect(first.status).toBe(401)
    const { mfa_token } = (await first.json()) as { mfa_token: string }
    const second = await call('POST', '/auth/mfa/verify', { mfa_token, recovery_code: round.grace.unusedRecoveryCode })
    expect(second.status, await second.clone().text()).toBe(200)

    // Old sessions: the current refresh token is still current, a revoked session still revoked, and
    // a session written before devices existed still rotates.
    const refresh = (s: { sid: string; userId: number; jti: string }) =>
      mintToken({
        sub: String(s.userId),
        sid: s.sid,
        jti: s.jti,
        token_type: 'refresh',
        exp: Math.floor(NOW / 1000) + DAY / 1000,
      })
    expect((await call('POST', '/auth/token/verify', { token: await refresh(round.liveSession) })).status).toBe(200)
    expect((await call('POST', '/auth/token/verify', { token: await refresh(round.revokedSession) })).status).toBe(401)
    const rotated = await call('POST', '/auth/token/refresh', { refresh_token: await refresh(round.legacySession) })
    expect(rotated.status, await rotated.clone().text()).toBe(200)

    // A passkey of the old schema still signs in, its counter going on from the stored one.
    if (round.passkey !== undefined) {
      const started = await call('POST', '/auth/passkeys/login/options', {})
      const { challenge_id, options } = (await started.json()) as {
        challenge_id: string
        options: { challenge: string }
      }
      const response = await round.passkey.authenticator.assert(options)
      const signedIn = await call('POST', '/auth/passkeys/login', { challenge_id, response })
      expect(signedIn.status, await signedIn.clone().text()).toBe(200)
      const { access_token } = (await signedIn.json()) as TokenPair
      expect(decodeJwt(access_token).payload.sub).toBe(String(round.passkey.userId))
    }

    // Posts written before the life cycle are published since their creation, under post-<id>,
    // and the full-text index still finds them. (A token keeps the reads out of the edge cache.)
    for (const old of round.oldPosts) {
      const res = await call('GET', `/posts/by-slug/post-${old.id}`, undefined, token)
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({
        id: old.id,
        slug: `post-${old.id}`,
        status: 'published',
        published_at: new Date(old.createdAt).toISOString(),
      })
      const found = await call('GET', `/posts?q=${old.word}`, undefined, token)
      expect(found.status).toBe(200)
      expect(((await found.json()) as { results: { id: number }[] }).results.map((p) => p.id)).toEqual([old.id])
    }
  }
}

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  for (const name of Object.keys(PASSWORDS) as (keyof typeof PASSWORDS)[]) {
    hashes[name] = await hashPassword(PASSWORDS[name])
  }
  // The app's routes are imported on the first request (seconds, once per test worker): not here.
  expect((await call('POST', '/auth/token', {})).status).toBe(400)
  // The hooks' 10 s default is too tight for that import on a busy runner when this file is the
  // first of its worker (testTimeout in vitest.config.ts says the same of tests).
}, 60_000)

/** Fills at `index`, upgrades to `to`, and checks that nothing was lost on the way. */
async function fillAndUpgrade(index: number, to: number, round: number): Promise<Filled> {
  const filled = await fill(index, round)
  await expectEveryColumnFilled()
  const before = await snapshot()
  await migrateTo(to)
  const after = await snapshot()
  await expectNoDataLost(
    before,
    after,
    migrations.slice(index + 1, to + 1).map((m) => m.name.replace(/\.sql$/, '')),
  )
  await expectSoundDatabase()
  return filled
}

// Each landed schema from 0009 on (up to the newest fill() knows), filled and upgraded to the newest.
const STEPS = Array.from(
  { length: Math.min(NEWEST - 1, NEWEST_FILLED) - OLDEST_FILLED + 1 },
  (_, i) => OLDEST_FILLED + i,
)

describe('schema upgrades keep every row (UPGRADE_DB: fill at a landed migration, migrate to the newest)', () => {
  it.each(STEPS.map((index) => [tagOf(index), index] as const))(
    'rows written at %s survive the upgrade to the newest schema, and the app signs their users in',
    async (_tag, index) => {
      await resetUpgradeDb()
      await migrateTo(index)
      const filled = await fillAndUpgrade(index, NEWEST, 1)
      await expectAppWorksWithOldRows([filled])
    },
  )

  it('a database that lived through every step: filled at each landed schema, upgraded one migration at a time', async () => {
    await resetUpgradeDb()
    await migrateTo(OLDEST_FILLED)
    const filled: Filled[] = []
    for (let index = OLDEST_FILLED; index < NEWEST; index++) {
      if (index <= NEWEST_FILLED) filled.push(await fillAndUpgrade(index, index + 1, filled.length + 1))
      else {
        // A schema fill() does not know yet: the older rows are still checked across it.
        const before = await snapshot()
        await migrateTo(index + 1)
        await expectNoDataLost(before, await snapshot(), [tagOf(index + 1)])
        await expectSoundDatabase()
      }
    }
    await expectAppWorksWithOldRows(filled)
  })

  it('the check itself: a drizzle-kit table recreate of posts is caught', async () => {
    await resetUpgradeDb()
    await migrateTo(NEWEST_FILLED)
    await fill(NEWEST_FILLED, 1)
    // Also the proof that fill() writes every column of the newest schema it knows.
    await expectEveryColumnFilled()
    const before = await snapshot()
    // What drizzle-kit generates for a change SQLite's ALTER TABLE cannot make, with a column
    // forgotten in the copy (as when a rename is answered "create column").
    const { sql } = (await db.prepare(`SELECT sql FROM sqlite_master WHERE name = 'posts'`).first<{ sql: string }>())!
    const copied = before.tables
      .get('posts')!
      .columns.map((c) => `"${c.name}"`)
      .filter((c) => c !== '"published_at"')
    const recreate = {
      name: '9999_recreate_posts.sql',
      queries: [
        'PRAGMA foreign_keys=OFF',
        sql.replace(/^CREATE TABLE [`"]?posts[`"]?/, 'CREATE TABLE `__new_posts`'),
        `INSERT INTO __new_posts (${copied.join(', ')}) SELECT ${copied.join(', ')} FROM posts`,
        'DROP TABLE posts',
        'ALTER TABLE __new_posts RENAME TO posts',
        'PRAGMA foreign_keys=ON',
      ],
    }
    await applyD1Migrations(db, [...migrations.slice(0, NEWEST_FILLED + 1), recreate])
    const { actual, expected } = await dataLossReport(before, await snapshot(), [recreate.name])
    expect(actual).not.toEqual(expected)
    // D1 enforces foreign keys inside the migration's batch whatever the PRAGMA says: dropping posts
    // deleted every newsletter (and its ledger) in cascade.
    expect(actual.tables.newsletters).toMatchObject({ rowCount: 0 })
    expect(expected.tables.newsletters).toMatchObject({ rowCount: 5 })
    expect(actual.tables.newsletter_deliveries).toMatchObject({ rowCount: 0 })
    // The column left out of the copy is back at NULL on every post.
    const published = (rows: Row[] | undefined) => rows!.map((row) => row.published_at)
    expect(published(expected.tables.posts!.rows).filter((at) => at !== null)).toHaveLength(4)
    expect(published(actual.tables.posts!.rows)).toEqual(expected.tables.posts!.rows!.map(() => null))
    // The FTS triggers and the slug fallback went with the dropped table.
    for (const trigger of ['posts_fts_after_insert', 'posts_fts_after_update', 'posts_slug_fallback']) {
      expect(actual.indexesAndTriggers[trigger]).toBe('MISSING')
    }
  })
})
