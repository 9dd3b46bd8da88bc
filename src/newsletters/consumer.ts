import { getConfig } from '../config'
import type { Env } from '../config'
import { createDb } from '../db/client'
import { failDeadLetteredBatch, findNewsletter } from '../db/newsletters'
import { deliverDueEmails } from '../email/outbox'
import { transportFor } from '../email/transports'
import type { MailQueueMessage } from '../lib/mail-queue-messages'
import { senderOf } from './sender-stub'
import { continueSnapshot, startSend } from './start'

// The consumer of the mail queue and of its dead-letter queue (wrangler.toml). Each message is
// acknowledged when its work is done, retried with backoff (or the provider's Retry-After) when
// it could not be, and after max_retries lands in the dead-letter queue, whose consumer records
// the failure. Messages of one batch are independent and run concurrently.

/** The dead-letter queue is named after the main one. */
const DEAD_LETTER_SUFFIX = '-dlq'

/** Backoff of a failed message: 5, 10, 20 … seconds, capped at 5 minutes. */
export function retryDelaySeconds(attempts: number): number {
  return Math.min(300, 5 * 2 ** Math.max(0, attempts - 1))
}

export async function handleMailQueue(batch: MessageBatch<MailQueueMessage>, env: Env): Promise<void> {
  const deadLetters = batch.queue.endsWith(DEAD_LETTER_SUFFIX)
  await Promise.all(
    batch.messages.map(async (message) => {
      try {
        if (deadLetters) {
          await recordDeadLetter(message.body, env)
          message.ack()
          return
        }
        const outcome = await handleMessage(message.body, env)
        if (outcome.retry) message.retry({ delaySeconds: outcome.afterSeconds ?? retryDelaySeconds(message.attempts) })
        else message.ack()
      } catch (err) {
        console.error(
          JSON.stringify({
            level: 'error',
            message: deadLetters ? 'dead letter not recorded' : 'mail queue message failed',
            kind: message.body?.kind,
            attempts: message.attempts,
            error: err instanceof Error ? err.message.slice(0, 300) : 'unknown',
          }),
        )
        message.retry({ delaySeconds: retryDelaySeconds(message.attempts) })
      }
    }),
  )
}

/** What became of a message: done, or to retry (after the provider's Retry-After, else the backoff). */
type Outcome = { retry: false } | { retry: true; afterSeconds: number | undefined }

const DONE: Outcome = { retry: false }

/** Does a message's work. */
async function handleMessage(body: MailQueueMessage, env: Env): Promise<Outcome> {
  const now = new Date()
  switch (body.kind) {
    case 'outbox':
      await drainOutbox(env, now)
      return DONE
    case 'newsletter-start':
    case 'newsletter-snapshot': {
      if (env.MAIL_QUEUE === undefined) throw new Error('MAIL_QUEUE is not bound')
      const deps = { db: createDb(env), config: getConfig(env), queue: env.MAIL_QUEUE }
      if (body.kind === 'newsletter-start') await startSend(deps, body.newsletterId, now)
      else await continueSnapshot(deps, body.newsletterId, now)
      return DONE
    }
    case 'newsletter-batch': {
      const result = await senderOf(env, body.newsletterId).deliver(body)
      if (result.done) return DONE
      console.warn(
        JSON.stringify({
          level: 'warn',
          message: 'newsletter batch to retry',
          batch: body.batchNo,
          error: result.error,
        }),
      )
      return { retry: true, afterSeconds: result.retryAfterSeconds }
    }
  }
}

/** Delivers what the outbox has due, a few rounds at most (the cron retries the rest). */
async function drainOutbox(env: Env, now: Date): Promise<void> {
  const config = getConfig(env)
  const transport = transportFor(config)
  if (transport === undefined) return
  const db = createDb(env)
  for (let round = 0; round < 4; round++) {
    const report = await deliverDueEmails(db, transport, config.mail.from, now, 25)
    if (report.sent + report.retried + report.failed < 25) return
  }
}

/** A message the queue gave up on: a newsletter's batch or start is recorded as failed; an outbox drain is left to the cron. */
async function recordDeadLetter(body: MailQueueMessage, env: Env): Promise<void> {
  const db = createDb(env)
  const now = new Date()
  if (body.kind === 'newsletter-batch') {
    await failDeadLetteredBatch(db, body.newsletterId, body.batchNo, 'dead-lettered after the queue’s retries', now)
    return
  }
  if (body.kind === 'newsletter-start' || body.kind === 'newsletter-snapshot') {
    const newsletter = await findNewsletter(db, body.newsletterId)
    if (newsletter?.status === 'sending') {
      await failDeadLetteredBatch(db, body.newsletterId, -1, 'the snapshot was dead-lettered', now)
    }
  }
}
