import { sql } from 'drizzle-orm'
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core'

// Timestamps are integer milliseconds since the epoch (drizzle maps them to Date); the API renders
// them as ISO 8601 UTC strings.
const timestamp = (name?: string) =>
  name === undefined ? integer({ mode: 'timestamp_ms' }) : integer(name, { mode: 'timestamp_ms' })

export const users = sqliteTable(
  'users',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    username: text().notNull(),
    /**
     * usernameKey(username) (src/lib/usernames.ts): NFKC and full case folding, which SQL cannot
     * compute. NULL on rows written before it existed until backfillUsernameKeys() keys them
     * (src/db/users.ts); U+FFFF and the id on an old row whose key an older row already holds.
     */
    usernameKey: text(),
    email: text().notNull(),
    emailVerified: integer({ mode: 'boolean' }).notNull().default(false),
    isAdmin: integer({ mode: 'boolean' }).notNull().default(false),
    passwordHash: text().notNull(),
    /** A confirmed TOTP factor exists (mfa_factors): login then needs a second step. */
    mfaEnabled: integer({ mode: 'boolean' }).notNull().default(false),
    createdAt: timestamp().notNull(),
    updatedAt: timestamp().notNull(),
    lastLoginAt: timestamp(),
    /**
     * When every session of the user last ended at once (logout-all, password change or reset):
     * an MFA token minted before it is refused.
     */
    allSessionsEndedAt: timestamp(),
  },
  (table) => [
    // Case-insensitive uniqueness: `Émile` cannot shadow `émile`, nor `STRASSE` `straße`. Login
    // looks the key up. SQLite's lower() folds A-Z only: the lower(username) index is kept for the
    // rows without a key of their own (docs/design.md § Usernames), and emails compare as mail
    // servers do in practice. Lookups use the same lower() expression so they hit these indexes.
    uniqueIndex('users_username_key_unique').on(table.usernameKey),
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
    /** A short label derived from the login's User-Agent ("Firefox on macOS"); never the raw header. */
    deviceLabel: text(),
    /** Country (ISO 3166-1 alpha-2) and Cloudflare location (IATA) of the login, from request.cf. */
    loginCountry: text(),
    loginColo: text(),
    /** The last refresh: when, and from which country and Cloudflare location. */
    lastUsedAt: timestamp(),
    lastCountry: text(),
    lastColo: text(),
    /** The last time the user proved who they are in this session (the `auth_time` claim); null: at login (`createdAt`). */
    authenticatedAt: timestamp(),
  },
  (table) => [
    index('sessions_user_id_idx').on(table.userId, table.revokedAt),
    // The cron prunes expired sessions by this column.
    index('sessions_refresh_expires_at_idx').on(table.refreshExpiresAt),
  ],
)

/**
 * A user's TOTP factor (RFC 6238). The secret is sealed with AES-GCM under a key derived from
 * MFA_ENCRYPTION_KEY (src/lib/secret-box.ts). Active once confirmed; `lastStep` is the last time
 * step accepted, so a code cannot be used twice. Wrong codes are counted per window.
 */
export const mfaFactors = sqliteTable('mfa_factors', {
  userId: integer()
    .primaryKey()
    .references(() => users.id, { onDelete: 'cascade' }),
  secretSealed: text().notNull(),
  createdAt: timestamp().notNull(),
  confirmedAt: timestamp(),
  lastStep: integer(),
  failedAttempts: integer().notNull().default(0),
  failedWindowStart: timestamp(),
  /** The account's address was unverified when the factor was added: a password reset removes it. */
  addedWhileUnverified: integer({ mode: 'boolean' }).notNull().default(false),
})

/**
 * The MFA tokens (the first step of a login with a second factor) that were tried: each takes a
 * limited number of wrong codes and signs in once.
 */
export const mfaChallenges = sqliteTable(
  'mfa_challenges',
  {
    /** The MFA token's `jti`. */
    jti: text().primaryKey(),
    userId: integer()
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    attempts: integer().notNull().default(0),
    usedAt: timestamp(),
    /** The MFA token's expiry: the row may be pruned after it. */
    expiresAt: timestamp().notNull(),
  },
  (table) => [
    index('mfa_challenges_expires_at_idx').on(table.expiresAt),
    // Deleting a user checks this table's foreign key.
    index('mfa_challenges_user_id_idx').on(table.userId),
  ],
)

/** Single-use recovery codes of a factor, stored only as SHA-256 hashes. */
export const mfaRecoveryCodes = sqliteTable(
  'mfa_recovery_codes',
  {
    codeHash: text().primaryKey(),
    userId: integer()
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    createdAt: timestamp().notNull(),
    usedAt: timestamp(),
  },
  (table) => [index('mfa_recovery_codes_user_id_idx').on(table.userId)],
)

/**
 * An account at an OpenID Connect provider (Sign in with Apple, Google) that signs in to a user:
 * the provider's name in OIDC_PROVIDERS and its stable subject. Created by a first native sign-in
 * or by linking from a signed-in account (docs/design.md § Native sign-in (OIDC)).
 */
export const externalIdentities = sqliteTable(
  'external_identities',
  {
    provider: text().notNull(),
    sub: text().notNull(),
    userId: integer()
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    /** The address the provider gave when the identity was linked (Apple's may be a relay). */
    email: text(),
    createdAt: timestamp().notNull(),
    /** The account's address was unverified when the identity was linked: a password reset removes it. */
    addedWhileUnverified: integer({ mode: 'boolean' }).notNull().default(false),
  },
  (table) => [
    primaryKey({ columns: [table.provider, table.sub] }),
    index('external_identities_user_id_idx').on(table.userId),
  ],
)

/**
 * The opaque WebAuthn user handle of a user (`user.id` in the creation options, `userHandle` in an
 * assertion): random, never the numeric id or the email, and the same for all of a user's
 * passkeys, so an authenticator keeps one passkey per account and site.
 */
export const passkeyUserHandles = sqliteTable('passkey_user_handles', {
  userId: integer()
    .primaryKey()
    .references(() => users.id, { onDelete: 'cascade' }),
  /** 32 random bytes, base64url. */
  handle: text().notNull().unique(),
})

/** A passkey (WebAuthn public-key credential) that signs in to a user (docs/design.md § Passkeys). */
export const passkeys = sqliteTable(
  'passkeys',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    userId: integer()
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    /** The credential id, base64url: what an assertion names. */
    credentialId: text().notNull().unique(),
    /** The public key as a JWK (JSON), ready for WebCrypto. */
    publicKey: text().notNull(),
    /** The COSE algorithm: -7 (ES256), -8 (EdDSA) or -257 (RS256). */
    algorithm: integer().notNull(),
    /** The last signature counter seen; 0 for authenticators without one (synced passkeys). */
    signCount: integer().notNull().default(0),
    name: text().notNull(),
    /** The transports the browser reported at registration (JSON array), as hints for sign-in. */
    transports: text().notNull().default('[]'),
    /** The authenticator says this passkey is synced (backed up) elsewhere: the BS flag. */
    backedUp: integer({ mode: 'boolean' }).notNull().default(false),
    createdAt: timestamp().notNull(),
    lastUsedAt: timestamp(),
    /** The account's address was unverified when the passkey was added: a password reset removes it. */
    addedWhileUnverified: integer({ mode: 'boolean' }).notNull().default(false),
  },
  (table) => [index('passkeys_user_id_idx').on(table.userId)],
)

export const PASSKEY_CHALLENGE_PURPOSES = ['register', 'login'] as const
export type PasskeyChallengePurpose = (typeof PASSKEY_CHALLENGE_PURPOSES)[number]

/** A WebAuthn challenge handed out by an options endpoint: single use, for one purpose, 5 minutes. */
export const passkeyChallenges = sqliteTable(
  'passkey_challenges',
  {
    /** The `challenge_id` the client sends back, random. */
    id: text().primaryKey(),
    /** 32 random bytes, base64url: what clientDataJSON must carry. */
    challenge: text().notNull(),
    purpose: text({ enum: PASSKEY_CHALLENGE_PURPOSES }).notNull(),
    /** Registration: the user it was issued to. Login: the username's user, if one was given and exists. */
    userId: integer().references(() => users.id, { onDelete: 'cascade' }),
    expiresAt: timestamp().notNull(),
  },
  (table) => [
    index('passkey_challenges_expires_at_idx').on(table.expiresAt),
    index('passkey_challenges_user_id_idx').on(table.userId),
  ],
)

export const posts = sqliteTable(
  'posts',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    authorId: integer()
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    title: text().notNull(),
    body: text().notNull(),
    /** The stable part of the post's URL (src/lib/slugs.ts); unique. */
    slug: text().notNull(),
    /**
     * When the post is (or was, or will be) public: null for a draft, in the future while it is
     * scheduled. The status is derived from it at each read (src/lib/publication.ts), so a
     * scheduled post is published to the millisecond without any job running.
     */
    publishedAt: timestamp(),
    createdAt: timestamp().notNull(),
    updatedAt: timestamp().notNull(),
  },
  (table) => [
    // Keyset pagination: (created_at, id) and (published_at, id) for the global list, author first
    // for /users/{id}/posts and an author's scheduled posts; drafts by last change.
    index('posts_created_at_id_idx').on(table.createdAt, table.id),
    index('posts_author_created_at_id_idx').on(table.authorId, table.createdAt, table.id),
    // Published and scheduled posts only: a drafts list is then planned on the drafts index below,
    // not on this one and a sort. (The author index stays whole: it serves the users FK.)
    index('posts_published_at_id_idx').on(table.publishedAt, table.id).where(sql`published_at is not null`),
    index('posts_author_published_at_id_idx').on(table.authorId, table.publishedAt, table.id),
    index('posts_drafts_updated_at_id_idx').on(table.updatedAt, table.id).where(sql`published_at is null`),
    index('posts_author_drafts_updated_at_id_idx')
      .on(table.authorId, table.updatedAt, table.id)
      .where(sql`published_at is null`),
    uniqueIndex('posts_slug_unique').on(table.slug),
  ],
)

// `bounced` (a hard bounce) and `complained` (marked as spam) come from the provider's webhooks:
// never mailed again until the address subscribes, and confirms, anew.
export const SUBSCRIBER_STATUSES = ['pending', 'active', 'unsubscribed', 'bounced', 'complained'] as const
export type SubscriberStatus = (typeof SUBSCRIBER_STATUSES)[number]

export const subscribers = sqliteTable(
  'subscribers',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    email: text().notNull(),
    name: text(),
    status: text({ enum: SUBSCRIBER_STATUSES }).notNull(),
    createdAt: timestamp().notNull(),
    updatedAt: timestamp().notNull(),
    confirmedAt: timestamp(),
    unsubscribedAt: timestamp(),
    /** SHA-256 of the subscriber's unsubscribe token (src/lib/unsubscribe-tokens.ts). */
    unsubscribeTokenHash: text().notNull(),
  },
  (table) => [
    uniqueIndex('subscribers_email_lower_unique').on(sql`lower(${table.email})`),
    uniqueIndex('subscribers_unsubscribe_token_hash_unique').on(table.unsubscribeTokenHash),
    index('subscribers_created_at_id_idx').on(table.createdAt, table.id),
    index('subscribers_status_created_at_id_idx').on(table.status, table.createdAt, table.id),
    // A newsletter's snapshot walks the active subscribers by id.
    index('subscribers_status_id_idx').on(table.status, table.id),
  ],
)

const ONE_TIME_TOKEN_PURPOSES = ['email_verification', 'password_reset', 'subscription_confirmation'] as const
export type OneTimeTokenPurpose = (typeof ONE_TIME_TOKEN_PURPOSES)[number]

/** Single-use tokens sent by email. Only a SHA-256 of the token is stored. */
export const oneTimeTokens = sqliteTable(
  'one_time_tokens',
  {
    tokenHash: text().primaryKey(),
    purpose: text({ enum: ONE_TIME_TOKEN_PURPOSES }).notNull(),
    userId: integer().references(() => users.id, { onDelete: 'cascade' }),
    subscriberId: integer().references(() => subscribers.id, { onDelete: 'cascade' }),
    /** The address the token was sent to: a verification is for that address only. */
    email: text().notNull(),
    createdAt: timestamp().notNull(),
    expiresAt: timestamp().notNull(),
    usedAt: timestamp(),
  },
  (table) => [
    index('one_time_tokens_user_id_idx').on(table.userId),
    index('one_time_tokens_subscriber_id_idx').on(table.subscriberId),
    index('one_time_tokens_expires_at_idx').on(table.expiresAt),
    // The per-recipient mail limit counts the recent tokens sent to an address.
    index('one_time_tokens_recipient_idx').on(sql`lower(${table.email})`, table.purpose, table.createdAt),
  ],
)

/** Provider ID tokens already used to sign in or link: each is accepted once (SHA-256 of the token). */
export const spentIdTokens = sqliteTable(
  'spent_id_tokens',
  {
    tokenHash: text().primaryKey(),
    /** The token's own expiry: after it the token is refused anyway, and the row may be pruned. */
    expiresAt: timestamp().notNull(),
  },
  (table) => [index('spent_id_tokens_expires_at_idx').on(table.expiresAt)],
)

/**
 * Never holds a row. A statement inserting NULL into it fails, and with it the whole D1 batch it
 * runs in (src/db/guards.ts): how a batch says "land only if this still holds" for a condition no
 * constraint of its own tables expresses (a recovery code spent by this very batch).
 */
export const batchGuards = sqliteTable('batch_guards', {
  guard: text().notNull(),
})

const OUTBOX_STATUSES = ['pending', 'sending', 'sent', 'failed'] as const

/** Every email is written here in the same D1 batch as the change that causes it, then delivered. */
export const emailOutbox = sqliteTable(
  'email_outbox',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    recipient: text().notNull(),
    subject: text().notNull(),
    text: text().notNull(),
    /** JSON object of extra headers (List-Unsubscribe, …). */
    headers: text().notNull().default('{}'),
    status: text({ enum: OUTBOX_STATUSES }).notNull().default('pending'),
    attempts: integer().notNull().default(0),
    nextAttemptAt: timestamp().notNull(),
    lastError: text(),
    createdAt: timestamp().notNull(),
    sentAt: timestamp(),
  },
  (table) => [index('email_outbox_status_next_attempt_idx').on(table.status, table.nextAttemptAt)],
)

export const NEWSLETTER_STATUSES = ['scheduled', 'sending', 'sent', 'cancelled', 'failed'] as const
export type NewsletterStatus = (typeof NEWSLETTER_STATUSES)[number]

/** A post mailed to the list: at most one per post (docs/design.md § Newsletters). */
export const newsletters = sqliteTable(
  'newsletters',
  {
    id: integer().primaryKey({ autoIncrement: true }),
    postId: integer()
      .notNull()
      .references(() => posts.id, { onDelete: 'cascade' }),
    status: text({ enum: NEWSLETTER_STATUSES }).notNull(),
    /** Set when the snapshot of active subscribers is complete; null before. */
    recipients: integer(),
    sent: integer().notNull().default(0),
    failed: integer().notNull().default(0),
    skipped: integer().notNull().default(0),
    /** The administrator who asked for it. */
    createdBy: integer().references(() => users.id, { onDelete: 'set null' }),
    /** The origin of the API that recipients' one-click unsubscribe links point at. */
    apiOrigin: text().notNull(),
    /** What every recipient gets, fixed when the send starts (an edit mid-send changes nothing). */
    subject: text(),
    text: text(),
    postUrl: text(),
    /** The subscriber id the snapshot has reached (it walks the list in chunks). */
    snapshotAfterId: integer().notNull().default(0),
    createdAt: timestamp().notNull(),
    scheduledFor: timestamp(),
    startedAt: timestamp(),
    completedAt: timestamp(),
  },
  (table) => [
    uniqueIndex('newsletters_post_id_unique').on(table.postId),
    index('newsletters_status_scheduled_for_idx').on(table.status, table.scheduledFor),
    // Deleting a user sets created_by to null; without this the delete scans every newsletter.
    index('newsletters_created_by_idx').on(table.createdBy),
  ],
)

export const DELIVERY_STATUSES = ['queued', 'sending', 'sent', 'failed', 'skipped'] as const
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number]

/**
 * The ledger: one row per (newsletter, recipient), from queued through sending (handed to the
 * provider under the batch's idempotency key) to exactly one of sent, failed or skipped.
 */
export const newsletterDeliveries = sqliteTable(
  'newsletter_deliveries',
  {
    newsletterId: integer()
      .notNull()
      .references(() => newsletters.id, { onDelete: 'cascade' }),
    subscriberId: integer().notNull(),
    /** The address at the snapshot. */
    email: text().notNull(),
    /** Recipients travel in batches of up to 100, one queue message and one provider call each. */
    batchNo: integer().notNull(),
    status: text({ enum: DELIVERY_STATUSES }).notNull(),
    error: text(),
    updatedAt: timestamp().notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.newsletterId, table.subscriberId] }),
    // A batch's recipients in id order, without a sort. Not on status: a recipient's row changes
    // status twice (sending, then its outcome), and an index on it would be written each time.
    index('newsletter_deliveries_batch_idx').on(table.newsletterId, table.batchNo, table.subscriberId),
  ],
)

/** Provider webhooks already applied, by their `webhook-id`: a redelivery is applied once. */
export const emailEvents = sqliteTable(
  'email_events',
  {
    webhookId: text().primaryKey(),
    type: text().notNull(),
    receivedAt: timestamp().notNull(),
  },
  (table) => [index('email_events_received_at_idx').on(table.receivedAt)],
)

export type UserRow = typeof users.$inferSelect
export type SessionRow = typeof sessions.$inferSelect
export type MfaFactorRow = typeof mfaFactors.$inferSelect
export type MfaChallengeRow = typeof mfaChallenges.$inferSelect
export type ExternalIdentityRow = typeof externalIdentities.$inferSelect
export type SubscriberRow = typeof subscribers.$inferSelect
export type OutboxRow = typeof emailOutbox.$inferSelect
export type NewsletterRow = typeof newsletters.$inferSelect
export type DeliveryRow = typeof newsletterDeliveries.$inferSelect
export type PasskeyRow = typeof passkeys.$inferSelect
export type PasskeyChallengeRow = typeof passkeyChallenges.$inferSelect
