import type { Db } from '../db/client'
import { claimMessage, dueMessageIds, markAttemptFailed, markSent } from '../db/outbox'
import type { OutboxRow } from '../db/schema'
import type { MailTransport } from './transports'

// Delivery of the email outbox (src/db/outbox.ts): after each request that queued mail, and from
// the cron, which retries with backoff whatever a request-time attempt did not deliver.

/** After this many failed deliveries a message is marked `failed` and left for an operator. */
export const MAX_DELIVERY_ATTEMPTS = 8

// A claimed message is leased for this long from the moment of the claim; a worker that dies
// mid-send leaves it to be reclaimed by the next drain rather than lost.
const SEND_LEASE_MS = 60_000

/** Backoff before attempt n+1: 1, 2, 4 … minutes, capped at 6 hours. */
export function retryDelayMs(attempts: number): number {
  return Math.min(60_000 * 2 ** Math.max(0, attempts - 1), 6 * 3_600_000)
}

export interface DeliveryReport {
  sent: number
  retried: number
  failed: number
}

/**
 * Delivers the messages due at `now` (pending, or leased by a sender that vanished). Each message
 * is claimed with a conditional UPDATE first, so concurrent drains (request-time waitUntil and the
 * cron) never send the same message twice at once. `clock` is read at each claim.
 */
export async function deliverDueEmails(
  db: Db,
  transport: MailTransport,
  from: string,
  now: Date,
  limit = 25,
  clock: () => Date = () => new Date(),
): Promise<DeliveryReport> {
  const report: DeliveryReport = { sent: 0, retried: 0, failed: 0 }
  for (const id of await dueMessageIds(db, now, limit)) {
    // The lease runs from the claim, not from `now`: the cron's `now` is its scheduled time, and a
    // message claimed over a minute into a drain would get a lease already over, free for another
    // drain to send again. Never before `now` either, or a drain at the same `now` could reclaim it.
    const leaseStart = Math.max(now.getTime(), clock().getTime())
    const claimed = await claimMessage(db, id, now, new Date(leaseStart + SEND_LEASE_MS))
    if (claimed === undefined) continue
    const outcome = await deliverOne(db, transport, from, claimed, now)
    report[outcome] += 1
  }
  return report
}

async function deliverOne(
  db: Db,
  transport: MailTransport,
  from: string,
  message: OutboxRow,
  now: Date,
): Promise<keyof DeliveryReport> {
  try {
    await transport.send(
      {
        from,
        to: message.recipient,
        subject: message.subject,
        text: message.text,
        headers: JSON.parse(message.headers) as Record<string, string>,
      },
      // Stable per row: a provider that accepted an attempt whose answer was lost sends nothing again.
      // The creation time tells apart rows of another database (ids restart at 1 there) that
      // shares the provider account.
      { idempotencyKey: `edgepress-outbox-${message.id}-${message.createdAt.getTime()}` },
    )
  } catch (err) {
    const gaveUp = message.attempts >= MAX_DELIVERY_ATTEMPTS
    await markAttemptFailed(db, message, {
      gaveUp,
      nextAttemptAt: new Date(now.getTime() + retryDelayMs(message.attempts)),
      error: (err instanceof Error ? err.message : String(err)).slice(0, 500),
    })
    return gaveUp ? 'failed' : 'retried'
  }
  await markSent(db, message, now)
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
    console.error(
      JSON.stringify({
        level: 'error',
        message: 'email delivery failed',
        error: err instanceof Error ? err.name : 'unknown',
      }),
    )
  })
  executionCtx?.waitUntil(job)
}
