// What travels on the mail queue (wrangler.toml): small, self-describing messages. The queue
// delivers at least once, so every handler is idempotent: the ledger in D1 decides what is left
// to do, never the message alone.

/** Deliver the email outbox's due messages (sent by every request that queued mail). */
export interface OutboxDrain {
  kind: 'outbox'
}

/** Start a newsletter: take the first chunk of the snapshot (scheduled ones: at their time). */
export interface NewsletterStart {
  kind: 'newsletter-start'
  newsletterId: number
}

/** Take the next chunk of a newsletter's snapshot of active subscribers. */
export interface NewsletterSnapshot {
  kind: 'newsletter-snapshot'
  newsletterId: number
}

/** Mail one batch of a newsletter's recipients (up to 100, fixed by the snapshot in the ledger). */
export interface NewsletterBatch {
  kind: 'newsletter-batch'
  newsletterId: number
  batchNo: number
}

export type MailQueueMessage = OutboxDrain | NewsletterStart | NewsletterSnapshot | NewsletterBatch

/** Recipients per queue message and per provider request (the batch endpoint's limit). */
export const NEWSLETTER_BATCH_SIZE = 100
