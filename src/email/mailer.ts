import type { BatchItem } from 'drizzle-orm/batch'
import type { Config } from '../config'
import { createDb } from '../db/client'
import type { Db } from '../db/client'
import { insertOutboxMessage, insertOutboxMessageForToken } from '../db/outbox'
import type { QueuedEmail, TokenMessage } from '../db/outbox'
import type { MailQueueMessage } from '../lib/mail-queue-messages'

export type { QueuedEmail } from '../db/outbox'
import { deliverInBackground } from './outbox'
import { assertMailConfigured, transportFor } from './transports'

// The one way into the outbox. A request gets a Mailer for itself (src/router.ts mailerOf): it
// knows the configuration and the request, so every message it queues is one some transport may
// deliver from here, and it delivers what the request queued once the response is on its way.

export interface MailerOptions {
  config: Config
  /** The request queuing mail: the console transport is refused unless it came to a local host. */
  requestUrl: string | undefined
  /** For the delivery after the response; without one (a script) the cron delivers. */
  executionCtx: Pick<ExecutionContext, 'waitUntil'> | undefined
  /**
   * Delivery uses its own connection to D1, not the request's session; MAIL_QUEUE, when bound,
   * takes the delivery off the request (the consumer drains the outbox).
   */
  bindings: { DB: D1Database; MAIL_QUEUE?: Queue<MailQueueMessage> | undefined }
}

export interface Mailer {
  readonly config: Config
  /** 500 naming MAIL_TRANSPORT when no transport may deliver mail queued here: call it before any write. */
  assertCanSend(): void
  /**
   * The statement that queues a message, for the db.batch() of the change that causes it (it
   * checks assertCanSend first); with `onlyWithToken`, only if that batch issued the token.
   */
  queue(db: Db, message: QueuedEmail, now: Date, options?: { onlyWithToken?: string }): BatchItem<'sqlite'>
  /** The statement that queues a message to the owner of a token issued in the same batch (see insertOutboxMessageForToken). */
  queueForToken(db: Db, message: TokenMessage, tokenHash: string, now: Date): BatchItem<'sqlite'>
  /**
   * After the batch that queued mail has committed: hands the delivery on before the response,
   * to the mail queue (which no burst of requests can drop), else to the request's waitUntil.
   * The cron retries whatever fails either way.
   */
  deliverSoon(): Promise<void>
}

export function createMailer(options: MailerOptions): Mailer {
  const { config, requestUrl } = options
  const assertCanSend = (): void => assertMailConfigured(config, requestUrl)
  return {
    config,
    assertCanSend,
    queue(db, message, now, queueOptions = {}) {
      assertCanSend()
      return insertOutboxMessage(db, message, now, queueOptions)
    },
    queueForToken(db, message, tokenHash, now) {
      assertCanSend()
      return insertOutboxMessageForToken(db, message, tokenHash, now)
    },
    async deliverSoon() {
      const transport = transportFor(config, requestUrl)
      if (transport === undefined) return
      const queue = options.bindings.MAIL_QUEUE
      if (queue !== undefined) {
        try {
          await queue.send({ kind: 'outbox' })
          return
        } catch (err) {
          // The row is committed: delivering from here instead is as good, the cron is the net.
          console.error(
            JSON.stringify({
              level: 'error',
              message: 'mail queue unavailable',
              error: err instanceof Error ? err.name : 'unknown',
            }),
          )
        }
      }
      deliverInBackground(options.executionCtx, createDb(options.bindings), transport, config.mail.from)
    },
  }
}
