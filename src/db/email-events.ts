import { eq, lt, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { Db } from './client'
import { emailEvents } from './schema'

// The provider's webhooks already received, by their webhook-id. A provider redelivers an event
// until it gets a 2xx (and after a timeout that hid one): the effects of an event are guarded by
// emailEventUnrecorded() and batched before recordEmailEvent(), so they land exactly once.

export interface ReceivedEmailEvent {
  webhookId: string
  type: string
  receivedAt: Date
}

/** The statement that records an event as received; a second delivery changes nothing. */
export function recordEmailEvent(db: Db, event: ReceivedEmailEvent): BatchItem<'sqlite'> {
  return db.insert(emailEvents).values(event).onConflictDoNothing()
}

/**
 * True until the event is recorded: for the WHERE of each of its effects, which must come before
 * recordEmailEvent() in the same batch.
 */
export function emailEventUnrecorded(webhookId: string): SQL {
  return sql`not exists (select 1 from ${emailEvents} where ${eq(emailEvents.webhookId, webhookId)})`
}

/**
 * Deletes events received before `cutoff` (the cron). A redelivery after that would be applied
 * again, which repeats a bounce or a complaint: keep well past the provider's retry schedule.
 */
export function pruneEmailEvents(db: Db, cutoff: Date): BatchItem<'sqlite'> {
  return db.delete(emailEvents).where(lt(emailEvents.receivedAt, cutoff))
}
