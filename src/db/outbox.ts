import { and, eq, inArray, lte, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { emailOutbox, oneTimeTokens, subscribers, users } from './schema'
import type { OutboxRow } from './schema'

// The email outbox table. Every email is queued here in the same D1 batch as the change that
// causes it; src/email/outbox.ts delivers it. Each message is claimed with a conditional UPDATE
// (a lease) before it is sent, and only the holder of the current lease may settle it.

/** The message a queued row will become. */
export interface QueuedEmail {
  to: string
  subject: string
  text: string
  headers?: Record<string, string>
}

/**
 * The INSERT of a message into the outbox; with `onlyWithToken`, only if the same batch issued that
 * one-time token (it was within the per-recipient limit). Code that sends mail calls the Mailer
 * (src/email/mailer.ts), which first checks that a transport may deliver it.
 */
export function insertOutboxMessage(
  db: Db,
  message: QueuedEmail,
  now: Date,
  options: { onlyWithToken?: string } = {},
): BatchItem<'sqlite'> {
  const headers = JSON.stringify(message.headers ?? {})
  if (options.onlyWithToken === undefined) {
    return db.insert(emailOutbox).values({
      recipient: message.to,
      subject: message.subject,
      text: message.text,
      headers,
      nextAttemptAt: now,
      createdAt: now,
    })
  }
  const issued = sql`exists (select 1 from ${oneTimeTokens} where ${oneTimeTokens.tokenHash} = ${options.onlyWithToken})`
  return db.insert(emailOutbox).select(outboxRow(message.to, message.subject, message.text, headers, now, issued))
}

/** Every column of an outbox row, in the table's order (drizzle's insert … select). */
function outboxRow(
  recipient: SQL | string,
  subject: string,
  text: SQL | string,
  headers: string,
  now: Date,
  where: SQL,
  from?: SQL,
): SQL {
  const source = from === undefined ? sql`` : sql` from ${from}`
  return sql`select null, ${recipient}, ${subject}, ${text}, ${headers}, 'pending', 0, ${now.getTime()}, null, ${now.getTime()}, null${source} where ${where}`
}

/** A message whose recipient and some words come from the rows the token belongs to. */
export interface TokenMessage {
  subject: string
  /** The text, with each placeholder (a key of `fill`) replaced in SQL. */
  text: string
  headers?: Record<string, string>
  /** What each placeholder becomes: the owner's username or the subscriber's greeting name. */
  fill: Partial<Record<string, 'username' | 'subscriberGreeting'>>
}

/**
 * The INSERT of a message to the owner of the one-time token `tokenHash`, issued in the same batch
 * (nothing when it was not): the address the token went to, and words of the owner's row filled
 * in, so the request never reads the row first (the same round trips whoever owns the address).
 */
export function insertOutboxMessageForToken(
  db: Db,
  message: TokenMessage,
  tokenHash: string,
  now: Date,
): BatchItem<'sqlite'> {
  let text: SQL = sql`${message.text}`
  for (const [placeholder, field] of Object.entries(message.fill)) {
    const value =
      field === 'username'
        ? sql`${users.username}`
        : sql`(case when ${subscribers.name} is null then '' else ' ' || ${subscribers.name} end)`
    text = sql`replace(${text}, ${placeholder}, ${value})`
  }
  const from = sql`${oneTimeTokens} left join ${users} on ${users.id} = ${oneTimeTokens.userId} left join ${subscribers} on ${subscribers.id} = ${oneTimeTokens.subscriberId}`
  const headers = JSON.stringify(message.headers ?? {})
  const row = outboxRow(
    sql`${oneTimeTokens.email}`,
    message.subject,
    text,
    headers,
    now,
    sql`${oneTimeTokens.tokenHash} = ${tokenHash}`,
    from,
  )
  return db.insert(emailOutbox).select(row)
}

/** Ids of messages due now: pending, or leased by a sender whose lease ran out. Oldest due first. */
export async function dueMessageIds(db: Db, now: Date, limit: number): Promise<number[]> {
  const rows = await db
    .select({ id: emailOutbox.id })
    .from(emailOutbox)
    .where(and(inArray(emailOutbox.status, ['pending', 'sending']), lte(emailOutbox.nextAttemptAt, now)))
    .orderBy(emailOutbox.nextAttemptAt)
    .limit(limit)
  return rows.map((row) => row.id)
}

/**
 * Leases a due message until `leaseEnds` and counts the attempt; undefined when another drain
 * claimed it first (so concurrent drains never send the same message at once).
 */
export async function claimMessage(db: Db, id: number, now: Date, leaseEnds: Date): Promise<OutboxRow | undefined> {
  const [row] = await db
    .update(emailOutbox)
    .set({ status: 'sending', attempts: sql`${emailOutbox.attempts} + 1`, nextAttemptAt: leaseEnds })
    .where(
      and(
        eq(emailOutbox.id, id),
        or(eq(emailOutbox.status, 'pending'), eq(emailOutbox.status, 'sending')),
        lte(emailOutbox.nextAttemptAt, now),
      ),
    )
    .returning()
  return row
}

// If the lease ran out and another drain re-claimed the message, that drain's outcome counts.
function stillLeased(message: OutboxRow) {
  return and(
    eq(emailOutbox.id, message.id),
    eq(emailOutbox.status, 'sending'),
    eq(emailOutbox.attempts, message.attempts),
  )
}

export async function markSent(db: Db, message: OutboxRow, now: Date): Promise<void> {
  await db.update(emailOutbox).set({ status: 'sent', sentAt: now, lastError: null }).where(stillLeased(message))
}

/** Records a failed attempt: retried at `nextAttemptAt`, or `failed` for good when `gaveUp`. */
export async function markAttemptFailed(
  db: Db,
  message: OutboxRow,
  failure: { error: string; gaveUp: boolean; nextAttemptAt: Date },
): Promise<void> {
  await db
    .update(emailOutbox)
    .set({
      status: failure.gaveUp ? 'failed' : 'pending',
      nextAttemptAt: failure.nextAttemptAt,
      lastError: failure.error,
    })
    .where(stillLeased(message))
}
