import { and, eq, inArray, lte, or, sql } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { emailOutbox } from './schema'
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
 * The INSERT of a message into the outbox. Code that sends mail calls queueEmail()
 * (src/email/queue.ts), which first checks that a transport may deliver it.
 */
export function insertOutboxMessage(db: Db, message: QueuedEmail, now: Date): BatchItem<'sqlite'> {
  return db.insert(emailOutbox).values({
    recipient: message.to,
    subject: message.subject,
    text: message.text,
    headers: JSON.stringify(message.headers ?? {}),
    nextAttemptAt: now,
    createdAt: now,
  })
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
