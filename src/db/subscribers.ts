import { and, asc, eq, gt, inArray, ne, notInArray, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { BatchStatements, Db } from './client'
import { keysetCondition, keysetLimit, keysetOrder } from './keyset'
import type { Keyset, KeysetWindow } from './keyset'
import { withinRecipientLimit } from './one-time-tokens'
import type { LiveToken, RecipientLimit } from './one-time-tokens'
import { subscribers } from './schema'
import type { SubscriberRow, SubscriberStatus } from './schema'

const NEWEST_FIRST: Keyset = { sortColumn: subscribers.createdAt, idColumn: subscribers.id, order: 'desc' }

// lower(email) = lower(?) matches the expression index subscribers_email_lower_unique.
const emailIs = (email: string): SQL => sql`lower(${subscribers.email}) = lower(${email})`

export function findSubscriber(db: Db, id: number): Promise<SubscriberRow | undefined> {
  return db.query.subscribers.findFirst({ where: eq(subscribers.id, id) })
}

export function findSubscriberByEmail(db: Db, email: string): Promise<SubscriberRow | undefined> {
  return db.query.subscribers.findFirst({ where: emailIs(email) })
}

/** A subquery yielding the id of the subscriber with this email: for statements batched with its INSERT. */
export function subscriberIdByEmail(email: string): SQL {
  return sql`(select ${subscribers.id} from ${subscribers} where ${emailIs(email)})`
}

/**
 * Statements that make an address pending, for one batch, whatever its state (so the request
 * makes the same round trips for every address): a new address is inserted, a pending or
 * unsubscribed one made pending again; an active one stays as it is. Nothing changes once the
 * address was sent `limit.max` confirmations in the window. Anyone may post any address, so an
 * existing row keeps its name (`input.name` is only for a new row); its unsubscribe token hash is
 * refreshed, so the links of the email about to be sent work under the current key.
 */
export function pendingSubscriberStatements(
  db: Db,
  input: { email: string; name: string | null; unsubscribeTokenHash: string },
  now: Date,
  limit: RecipientLimit,
): BatchStatements {
  const withinLimit = withinRecipientLimit(input.email, 'subscription_confirmation', limit)
  const known = sql`exists (select 1 from ${subscribers} where ${emailIs(input.email)})`
  // Every column, in the table's order (drizzle's insert … select).
  const newRow = sql`select null, ${input.email}, ${input.name}, 'pending', ${now.getTime()}, ${now.getTime()}, null, null, ${input.unsubscribeTokenHash} where not ${known} and ${withinLimit}`
  return [
    db.insert(subscribers).select(newRow).onConflictDoNothing(),
    db
      .update(subscribers)
      .set({ status: 'pending', unsubscribeTokenHash: input.unsubscribeTokenHash, confirmedAt: null, updatedAt: now })
      .where(and(emailIs(input.email), ne(subscribers.status, 'active'), withinLimit)),
  ]
}

/**
 * Activates the subscriber a live confirmation token belongs to, unless the address bounced or
 * complained since the link was mailed: that takes a new subscription (and a new link).
 */
export function activateSubscriber(db: Db, live: LiveToken, now: Date): BatchItem<'sqlite'> {
  return db
    .update(subscribers)
    .set({ status: 'active', confirmedAt: now, unsubscribedAt: null, updatedAt: now })
    .where(and(eq(subscribers.id, live.subscriberId), notInArray(subscribers.status, UNDELIVERABLE)))
}

/**
 * Unsubscribes the holder of the token; false when no subscriber has it. Repeating it is harmless.
 * A bounced or complained subscriber keeps that status: it is mailed no more either way, and the
 * status says why.
 */
export async function unsubscribeByTokenHash(db: Db, tokenHash: string, now: Date): Promise<boolean> {
  const keeps = inArray(subscribers.status, UNDELIVERABLE)
  const [row] = await db
    .update(subscribers)
    .set({
      status: sql`case when ${keeps} then ${subscribers.status} else 'unsubscribed' end`,
      unsubscribedAt: sql`case when ${keeps} then ${subscribers.unsubscribedAt} else coalesce(${subscribers.unsubscribedAt}, ${now.getTime()}) end`,
      updatedAt: now,
    })
    .where(eq(subscribers.unsubscribeTokenHash, tokenHash))
    .returning({ id: subscribers.id })
  return row !== undefined
}

/** The statuses the provider's events set: the address is never mailed again until it subscribes anew. */
export type UndeliverableStatus = 'bounced' | 'complained'

const UNDELIVERABLE: UndeliverableStatus[] = ['bounced', 'complained']

/**
 * The statement that marks the subscribers with these addresses (any case) bounced or complained,
 * when `condition` holds (the provider's event not applied yet). A complaint is never turned back
 * into a bounce.
 */
export function markUndeliverable(
  db: Db,
  addresses: readonly [string, ...string[]],
  status: UndeliverableStatus,
  now: Date,
  condition: SQL,
): BatchItem<'sqlite'> {
  const unchanged: SubscriberStatus[] = status === 'bounced' ? UNDELIVERABLE : ['complained']
  const lowered = sql.join(
    addresses.map((address) => sql`lower(${address})`),
    sql`, `,
  )
  return db
    .update(subscribers)
    .set({ status, updatedAt: now })
    .where(and(sql`lower(${subscribers.email}) in (${lowered})`, notInArray(subscribers.status, unchanged), condition))
}

export interface SubscriberFilters {
  status?: SubscriberStatus | undefined
  /** Substring of the email or the name, any case. */
  search?: string | undefined
}

/** One keyset window of subscribers, newest first: `limit + 1` rows in walk order. */
export function listSubscribers(db: Db, filters: SubscriberFilters, window: KeysetWindow): Promise<SubscriberRow[]> {
  const { status, search } = filters
  return db
    .select()
    .from(subscribers)
    .where(
      and(
        keysetCondition(NEWEST_FIRST, window),
        status === undefined ? undefined : eq(subscribers.status, status),
        // instr() instead of LIKE: no wildcard characters to escape in the admin's input. lower()
        // on both sides: SQLite folds only A–Z, so the term must be folded the same way.
        search === undefined
          ? undefined
          : sql`(instr(lower(${subscribers.email}), lower(${search})) > 0 or instr(lower(coalesce(${subscribers.name}, '')), lower(${search})) > 0)`,
      ),
    )
    .orderBy(...keysetOrder(NEWEST_FIRST, window))
    .limit(keysetLimit(window))
}

/** The next `limit` subscribers after `lastId`, by id: the export reads the table in such chunks. */
export function subscribersAfter(db: Db, lastId: number, limit: number): Promise<SubscriberRow[]> {
  return db.select().from(subscribers).where(gt(subscribers.id, lastId)).orderBy(asc(subscribers.id)).limit(limit)
}

/** Saves an admin's changes; a status change keeps confirmed_at and unsubscribed_at consistent. */
export async function updateSubscriber(
  db: Db,
  subscriber: SubscriberRow,
  changes: { name?: string | null | undefined; status?: SubscriberStatus | undefined },
  now: Date,
): Promise<SubscriberRow | undefined> {
  const { name, status } = changes
  const statusChange =
    status === undefined || status === subscriber.status
      ? {}
      : {
          status,
          confirmedAt: status === 'active' ? (subscriber.confirmedAt ?? now) : subscriber.confirmedAt,
          unsubscribedAt: status === 'unsubscribed' ? now : null,
        }
  const [saved] = await db
    .update(subscribers)
    .set({ ...(name === undefined ? {} : { name }), ...statusChange, updatedAt: now })
    .where(eq(subscribers.id, subscriber.id))
    .returning()
  return saved
}

export async function deleteSubscriber(db: Db, id: number): Promise<void> {
  await db.delete(subscribers).where(eq(subscribers.id, id))
}
