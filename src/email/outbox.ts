import { and, eq, inArray, lte, or, sql } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { emailOutbox } from '../db/schema'
import type { OutboxRow } from '../db/schema'
import type { Db } from '../router'
import type { EmailMessage } from './messages'
import type { MailTransport } from './transports'

/** After this many failed deliveries a message is marked `failed` and left for an operator. */
export const MAX_DELIVERY_ATTEMPTS = 8

// A claimed message is leased for this long; a worker that dies mid-send leaves it to be
// reclaimed by the next drain rather than lost.
const SEND_LEASE_MS = 60_000

/** Backoff before attempt n+1: 1, 2, 4 … minutes, capped at 6 hours. */
export function retryDelayMs(attempts: number): number {
  return Math.min(60_000 * 2 ** Math.max(0, attempts - 1), 6 * 3_600_000)
}

/** The INSERT that queues a message: put it in the same db.batch() as the change that causes it. */
export function queueEmail(db: Db, message: EmailMessage, now: Date): BatchItem<'sqlite'> {
  return db.insert(emailOutbox).values({
    recipient: message.to,
    subject: message.subject,
    text: message.text,
    headers: JSON.stringify(message.headers ?? {}),
    nextAttemptAt: now,
    createdAt: now,
  })
}

export interface DeliveryReport {
  sent: number
  retried: number
  failed: number
}

/**
 * Delivers due messages (pending, or leased by a sender that vanished). Each message is claimed
 * with a conditional UPDATE first, so concurrent drains (request-time waitUntil and the cron)
 * never send the same message twice at once.
 */
export async function deliverDueEmails(
  db: Db,
  transport: MailTransport,
  from: string,
  now: Date,
  limit = 25,
): Promise<DeliveryReport> {
  const due = await db
    .select({ id: emailOutbox.id })
    .from(emailOutbox)
    .where(and(inArray(emailOutbox.status, ['pending', 'sending']), lte(emailOutbox.nextAttemptAt, now)))
    .orderBy(emailOutbox.nextAttemptAt)
    .limit(limit)
  const report: DeliveryReport = { sent: 0, retried: 0, failed: 0 }
  for (const { id } of due) {
    const claimed = await claim(db, id, now)
    if (claimed === undefined) continue
    const outcome = await deliverOne(db, transport, from, claimed, now)
    report[outcome] += 1
  }
  return report
}

// Only the holder of the current lease may settle a message: if the lease ran out and another
// drain re-claimed it, that drain's outcome is the one that counts.
function stillLeased(message: OutboxRow) {
  return and(eq(emailOutbox.id, message.id), eq(emailOutbox.status, 'sending'), eq(emailOutbox.attempts, message.attempts))
}

async function claim(db: Db, id: number, now: Date): Promise<OutboxRow | undefined> {
  const [row] = await db
    .update(emailOutbox)
    .set({
      status: 'sending',
      attempts: sql`${emailOutbox.attempts} + 1`,
      nextAttemptAt: new Date(now.getTime() + SEND_LEASE_MS),
    })
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

async function deliverOne(
  db: Db,
  transport: MailTransport,
  from: string,
  message: OutboxRow,
  now: Date,
): Promise<keyof DeliveryReport> {
  try {
    await transport.send({
      from,
      to: message.recipient,
      subject: message.subject,
      text: message.text,
      headers: JSON.parse(message.headers) as Record<string, string>,
    })
  } catch (err) {
    const gaveUp = message.attempts >= MAX_DELIVERY_ATTEMPTS
    await db
      .update(emailOutbox)
      .set({
        status: gaveUp ? 'failed' : 'pending',
        nextAttemptAt: new Date(now.getTime() + retryDelayMs(message.attempts)),
        lastError: (err instanceof Error ? err.message : String(err)).slice(0, 500),
      })
      .where(stillLeased(message))
    return gaveUp ? 'failed' : 'retried'
  }
  await db
    .update(emailOutbox)
    .set({ status: 'sent', sentAt: now, lastError: null })
    .where(stillLeased(message))
  return 'sent'
}

/**
 * Starts delivering due messages after the response is sent (the cron drain retries whatever
 * this attempt does not deliver). Call it after the batch that queued a message has committed.
 */
export function deliverInBackground(
  executionCtx: Pick<ExecutionContext, 'waitUntil'> | undefined,
  db: Db,
  transport: MailTransport,
  from: string,
): void {
  const job = deliverDueEmails(db, transport, from, new Date(), 5).catch((err: unknown) => {
    console.error(JSON.stringify({ level: 'error', message: 'email delivery failed', error: err instanceof Error ? err.name : 'unknown' }))
  })
  executionCtx?.waitUntil(job)
}
