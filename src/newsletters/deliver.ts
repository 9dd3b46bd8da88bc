import type { Config } from '../config'
import type { BatchOutcome, BatchRecipient } from '../db/newsletters'
import type { NewsletterRow } from '../db/schema'
import type { MailTransport } from '../email/transports'
import { sha256Base64Url } from '../lib/hmac'
import { unsubscribeTokenFor } from '../lib/unsubscribe-tokens'
import { newsletterContent, newsletterTemplate } from './content'
import type { BatchLedger } from './ledger'
import type { NewsletterBatch } from '../lib/mail-queue-messages'

// One batch of a newsletter, from the ledger to the provider and back (docs/design.md §
// Newsletters). Runs inside the newsletter's NewsletterSender, which keeps one attempt per batch
// at a time and lets a cancel wait for what is in flight.

export interface DeliveryDeps {
  /** Where batches are claimed and recorded (groupedLedger: the batches that arrive together share a round trip). */
  ledger: BatchLedger
  config: Pick<Config, 'publicBaseUrl' | 'feedTitle' | 'mail'>
  transport: MailTransport
  unsubscribeKey: CryptoKey
  /**
   * Renders the batches that arrive together one at a time (src/lib/one-at-a-time.ts): the
   * provider gets the first while the others are rendered, instead of all of them at the end.
   */
  renderInTurn: <Result>(render: () => Promise<Result>) => Promise<Result>
}

/** Done (nothing left to do for this batch), or try again after some seconds. */
export type BatchResult = { done: true } | { done: false; retryAfterSeconds: number | undefined; error: string }

/**
 * The key the provider deduplicates a batch by: the newsletter, the batch and its recipients in
 * order. A retry hands over the same recipients (the ledger keeps them `sending`), so the same
 * key; no other batch can have it. The newsletter's creation time is in it too: ids start again
 * at 1 in another database (a staging copy, a local one reset) that may use the same provider
 * account, which remembers keys for a day and would silently drop that send's batches.
 */
export async function batchIdempotencyKey(
  newsletter: Pick<NewsletterRow, 'id' | 'createdAt'>,
  batchNo: number,
  recipients: readonly BatchRecipient[],
): Promise<string> {
  const ids = recipients.map((recipient) => recipient.subscriberId).join(',')
  const digest = await sha256Base64Url(`${newsletter.createdAt.getTime()}:${ids}`)
  return `edgepress-newsletter-${newsletter.id}-${batchNo}-${digest.slice(0, 22)}`
}

export async function deliverBatch(deps: DeliveryDeps, batch: NewsletterBatch, now: Date): Promise<BatchResult> {
  const { ledger, config } = deps
  const claimed = await ledger.claim({ newsletterId: batch.newsletterId, batchNo: batch.batchNo, now })
  // Gone with its post, cancelled, failed or finished: nothing more leaves for it.
  if (claimed === undefined || claimed.newsletter.status !== 'sending') return { done: true }
  const { newsletter, recipients } = claimed
  const record = (outcome: BatchOutcome) =>
    ledger.record({ newsletterId: newsletter.id, settled: { batchNo: batch.batchNo, outcome }, now })
  if (recipients.length === 0) {
    await record({ status: 'sent' })
    return { done: true }
  }
  const emailTo = newsletterTemplate(
    newsletterContent(config, {
      subject: newsletter.subject ?? '',
      body: newsletter.text ?? '',
      postUrl: newsletter.postUrl ?? config.publicBaseUrl,
      apiOrigin: newsletter.apiOrigin,
    }),
  )
  const emails = await deps.renderInTurn(() =>
    Promise.all(
      recipients.map(async (recipient) =>
        emailTo(recipient.email, await unsubscribeTokenFor(recipient.email, deps.unsubscribeKey)),
      ),
    ),
  )
  const idempotencyKey = await batchIdempotencyKey(newsletter, batch.batchNo, recipients)
  const delivery = await deps.transport.sendBatch(emails, { idempotencyKey })
  if (delivery.outcome === 'retry') {
    return { done: false, retryAfterSeconds: delivery.retryAfterSeconds, error: delivery.error }
  }
  await record(delivery.outcome === 'accepted' ? { status: 'sent' } : { status: 'failed', error: delivery.error })
  return { done: true }
}
