import type { Config } from '../config'
import type { Db } from '../db/client'
import { advanceSnapshot, findNewsletter, followItsPost, startNewsletter, takeSnapshotChunk } from '../db/newsletters'
import type { NewsletterRow } from '../db/schema'
import { NEWSLETTER_BATCH_SIZE } from '../lib/mail-queue-messages'
import type { MailQueueMessage } from '../lib/mail-queue-messages'

// Starting a newsletter and taking its snapshot of active subscribers, chunk by chunk, each
// chunk's batches handed to the queue. Every step is idempotent: a message delivered twice finds
// the ledger rows and the cursor where the first left them.

export interface StartDeps {
  db: Db
  config: Pick<Config, 'postUrlTemplate'>
  queue: Queue<MailQueueMessage>
}

/** The longest delay a queue message may carry (Cloudflare Queues: 12 hours). */
export const MAX_QUEUE_DELAY_SECONDS = 12 * 3600

/**
 * Hands the start of a newsletter to the queue, delayed until `at` when that is within the
 * queue's limit; a later one is started by the cron (src/scheduled.ts), which looks ahead.
 */
export async function queueStart(queue: Queue<MailQueueMessage>, newsletterId: number, at: Date | null, now: Date) {
  const delaySeconds = at === null ? 0 : Math.ceil((at.getTime() - now.getTime()) / 1000)
  if (delaySeconds > MAX_QUEUE_DELAY_SECONDS) return
  await queue.send({ kind: 'newsletter-start', newsletterId }, { delaySeconds: Math.max(0, delaySeconds) })
}

/** Starts a due send and takes the first chunk of its snapshot; early, it waits for its time again. */
export async function startSend(deps: StartDeps, newsletterId: number, now: Date): Promise<void> {
  const started = await startNewsletter(deps.db, newsletterId, deps.config.postUrlTemplate, now)
  if (started === undefined) {
    let newsletter = await findNewsletter(deps.db, newsletterId)
    // Due, yet not started: its post is not public (back to draft, deleted or moved later while
    // the send did not follow). The send follows it now: cancelled, or scheduled at its new time.
    if (isDue(newsletter, now)) newsletter = (await followItsPost(deps.db, newsletterId, now)) ?? newsletter
    // A delayed message may come a little early, or the post was re-scheduled: wait again.
    if (newsletter?.status === 'scheduled' && newsletter.scheduledFor !== null) {
      await queueStart(deps.queue, newsletterId, newsletter.scheduledFor, now)
      return
    }
    // Started by an earlier delivery of this message, which may have failed before its first
    // chunk was handed on (then no snapshot message exists): carry on from the cursor.
    if (newsletter?.status !== 'sending' || newsletter.startedAt === null || newsletter.recipients !== null) return
  }
  await continueSnapshot(deps, newsletterId, now)
}

function isDue(newsletter: NewsletterRow | undefined, now: Date): boolean {
  if (newsletter === undefined || newsletter.startedAt !== null) return false
  if (newsletter.status === 'sending') return true
  return newsletter.status === 'scheduled' && newsletter.scheduledFor !== null && newsletter.scheduledFor <= now
}

/** Takes the next chunk of the snapshot, queues its batches, then the next chunk's message. */
export async function continueSnapshot(deps: StartDeps, newsletterId: number, now: Date): Promise<void> {
  const newsletter = await findNewsletter(deps.db, newsletterId)
  if (newsletter?.status !== 'sending' || newsletter.startedAt === null || newsletter.recipients !== null) return
  const chunk = await takeSnapshotChunk(deps.db, newsletter, NEWSLETTER_BATCH_SIZE, now)
  // sendBatch takes up to 100 messages (a chunk is 24 batches; see SNAPSHOT_CHUNK).
  for (let i = 0; i < chunk.batches.length; i += 100) {
    await deps.queue.sendBatch(
      chunk.batches.slice(i, i + 100).map((batchNo) => ({ body: { kind: 'newsletter-batch', newsletterId, batchNo } })),
    )
  }
  const advanced = await advanceSnapshot(deps.db, newsletter, chunk, now)
  if (advanced && chunk.nextAfterId !== null) await deps.queue.send({ kind: 'newsletter-snapshot', newsletterId })
}
