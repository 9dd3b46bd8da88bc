import type { BatchItem } from 'drizzle-orm/batch'
import type { Config } from '../config'
import type { Db } from '../db/client'
import { insertOutboxMessage } from '../db/outbox'
import type { QueuedEmail } from '../db/outbox'
import { assertMailConfigured } from './transports'

/**
 * The statement that queues an email: put it in the same db.batch() as the change that causes it,
 * then call deliverSoon() once the batch has committed. It refuses (500 naming MAIL_TRANSPORT)
 * before anything is written when no transport may deliver mail, so a message can never be left
 * in the outbox with nothing to send it. The one way into the outbox.
 */
export function queueEmail(db: Db, config: Config, message: QueuedEmail, now: Date): BatchItem<'sqlite'> {
  assertMailConfigured(config)
  return insertOutboxMessage(db, message, now)
}
