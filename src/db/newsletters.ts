import { and, asc, eq, gt, inArray, lte, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import { ApiError } from '../lib/api-error'
import type { Db } from './client'
import { violatedUniqueIndex } from './constraint-errors'
import { newsletterDeliveries, newsletters, posts, subscribers } from './schema'
import type { DeliveryStatus, NewsletterRow } from './schema'

// Newsletters and their ledger (docs/design.md § Newsletters). Every change of state is a
// conditional UPDATE on the row's current state, and every counter moves by the rows its own
// statement changed (changes()), in the same batch: a queue message delivered twice, or a step
// retried after a failure, finds nothing left to change and counts nothing twice.

export async function findNewsletterOfPost(db: Db, postId: number): Promise<NewsletterRow | undefined> {
  const [row] = await db.select().from(newsletters).where(eq(newsletters.postId, postId))
  return row
}

export async function findNewsletter(db: Db, id: number): Promise<NewsletterRow | undefined> {
  const [row] = await db.select().from(newsletters).where(eq(newsletters.id, id))
  return row
}

export interface NewNewsletter {
  postId: number
  /** The post's publication time when it is scheduled; null: it is out, send now. */
  scheduledFor: Date | null
  createdBy: number
  apiOrigin: string
}

/** One send per post: a second is 409 `newsletter_exists` (a retried request never mails twice). */
export async function insertNewsletter(db: Db, newsletter: NewNewsletter, now: Date): Promise<NewsletterRow> {
  const [row] = await db
    .insert(newsletters)
    .values({
      ...newsletter,
      status: newsletter.scheduledFor === null ? 'sending' : 'scheduled',
      createdAt: now,
    })
    .returning()
    .catch((err: unknown) => {
      if (/^newsletters\.post_id\b/.test(violatedUniqueIndex(err) ?? '')) throw newsletterExists()
      throw err
    })
  return row!
}

export const newsletterExists = (): ApiError =>
  new ApiError(409, 'newsletter_exists', 'This post already has a newsletter; GET it for its progress.')

/**
 * Starts a send that is due: a scheduled one whose time has come, or one created to go now. What
 * every recipient gets is fixed here, from the post as it is now: its title, body and URL
 * (POST_URL_TEMPLATE, filled in SQL). Undefined when there is nothing to start (cancelled,
 * already started, or not due yet).
 */
export async function startNewsletter(
  db: Db,
  id: number,
  postUrlTemplate: string,
  now: Date,
): Promise<NewsletterRow | undefined> {
  const ofPost = (column: SQL) => sql`(select ${column} from ${posts} where ${posts.id} = ${newsletters.postId})`
  const [row] = await db
    .update(newsletters)
    .set({
      status: 'sending',
      startedAt: now,
      subject: ofPost(sql`${posts.title}`),
      text: ofPost(sql`${posts.body}`),
      postUrl: ofPost(sql`replace(replace(${postUrlTemplate}, '{slug}', ${posts.slug}), '{id}', ${posts.id})`),
    })
    .where(
      and(
        eq(newsletters.id, id),
        sql`${newsletters.startedAt} is null`,
        sql`(${newsletters.status} = 'sending' or (${newsletters.status} = 'scheduled' and ${newsletters.scheduledFor} <= ${now.getTime()}))`,
        // The list only ever gets a post the public can read: one moved back to draft or to a
        // later time whose send was not cancelled or moved with it (a write that failed half-way)
        // does not start here; followItsPost() puts the send right.
        sql`${ofPost(sql`${posts.publishedAt}`)} <= ${now.getTime()}`,
      ),
    )
    .returning()
  return row
}

/**
 * A send that is due but whose post is not published (see startNewsletter) follows the post: a
 * draft or a deleted post cancels it, a later publication time schedules it then. Undefined when
 * the send is started, finished or not waiting.
 */
export async function followItsPost(db: Db, id: number, now: Date): Promise<NewsletterRow | undefined> {
  const publishedAt = sql`(select ${posts.publishedAt} from ${posts} where ${posts.id} = ${newsletters.postId})`
  const nowMs = now.getTime()
  const [row] = await db
    .update(newsletters)
    .set({
      status: sql`case when ${publishedAt} is null then 'cancelled' when ${publishedAt} > ${nowMs} then 'scheduled' else ${newsletters.status} end`,
      scheduledFor: sql`case when ${publishedAt} > ${nowMs} then ${publishedAt} else ${newsletters.scheduledFor} end`,
      completedAt: sql`case when ${publishedAt} is null then ${nowMs} else ${newsletters.completedAt} end`,
    })
    .where(
      and(
        eq(newsletters.id, id),
        sql`${newsletters.startedAt} is null`,
        inArray(newsletters.status, ['scheduled', 'sending']),
      ),
    )
    .returning()
  return row
}

/**
 * Subscribers per snapshot chunk: one INSERT … SELECT, then one queue batch of its 24 batch
 * messages and the message for the next chunk. With the consumer's max_batch_size of 25
 * (wrangler.toml) the next chunk is taken in the same delivery as this chunk's batches, while
 * they are sent, rather than alone between two deliveries; and no INSERT holds the database for
 * long (one of 10 000 rows kept every other query waiting about 100 ms).
 */
export const SNAPSHOT_CHUNK = 2_400

/** A chunk of the snapshot, taken: the batches to hand to the queue, and whether it was the last. */
export interface SnapshotChunk {
  /** The batch numbers of the chunk, in order. */
  batches: number[]
  /** The subscriber id the next chunk starts after; null when the snapshot is complete. */
  nextAfterId: number | null
}

/**
 * Takes the next chunk of the snapshot of active subscribers into the ledger (status queued), in
 * batches of `batchSize` by id. Redelivered, it finds its rows already there and answers the same
 * batches again; the cursor moves only once they are handed on (advanceSnapshot).
 */
export async function takeSnapshotChunk(
  db: Db,
  newsletter: Pick<NewsletterRow, 'id' | 'snapshotAfterId'>,
  batchSize: number,
  now: Date,
): Promise<SnapshotChunk> {
  const afterId = newsletter.snapshotAfterId
  const [ids, taken, last] = await db.batch([
    db
      .select({ id: subscribers.id })
      .from(subscribers)
      .where(and(eq(subscribers.status, 'active'), gt(subscribers.id, afterId)))
      .orderBy(asc(subscribers.id))
      .limit(SNAPSHOT_CHUNK),
    db
      .select({ subscriberId: newsletterDeliveries.subscriberId })
      .from(newsletterDeliveries)
      .where(and(eq(newsletterDeliveries.newsletterId, newsletter.id), gt(newsletterDeliveries.subscriberId, afterId)))
      .limit(1),
    db
      .select({ batchNo: sql<number | null>`max(${newsletterDeliveries.batchNo})` })
      .from(newsletterDeliveries)
      .where(eq(newsletterDeliveries.newsletterId, newsletter.id)),
  ])
  const lastId = ids.at(-1)?.id
  if (taken.length === 0) {
    if (lastId === undefined) return { batches: [], nextAfterId: null }
    const firstBatch = (last[0]?.batchNo ?? -1) + 1
    // Every column in the table's order (drizzle's insert … select); numbered in id order. D1
    // binds a JavaScript number as REAL: the batch number is cast, or `/` would not truncate.
    await db
      .insert(newsletterDeliveries)
      .select(
        sql`select ${newsletter.id}, ${subscribers.id}, ${subscribers.email}, cast(${firstBatch} + (row_number() over (order by ${subscribers.id}) - 1) / ${batchSize} as integer), 'queued', null, ${now.getTime()} from ${subscribers} where ${subscribers.status} = 'active' and ${subscribers.id} > ${afterId} and ${subscribers.id} <= ${lastId} order by ${subscribers.id}`,
      )
      .onConflictDoNothing()
  }
  // Every ledger row past the cursor is this chunk's (the cursor moves only once a chunk is on the
  // queue), so a redelivery hands on all of them again, also those of subscribers who have left
  // the list since (their batch skips them): a batch left off would never finish the send.
  // One row per batch, not per recipient: a batch message names its batch, and the claim reads
  // its recipients from the ledger.
  const batches = await db
    .select({ batchNo: newsletterDeliveries.batchNo, lastId: sql<number>`max(${newsletterDeliveries.subscriberId})` })
    .from(newsletterDeliveries)
    .where(and(eq(newsletterDeliveries.newsletterId, newsletter.id), gt(newsletterDeliveries.subscriberId, afterId)))
    .groupBy(newsletterDeliveries.batchNo)
    .orderBy(asc(newsletterDeliveries.batchNo))
  const end = batches.at(-1)?.lastId ?? lastId ?? afterId
  // The last chunk: fewer active subscribers past the cursor than a chunk, all of them within it.
  const isLastChunk = ids.length < SNAPSHOT_CHUNK && (lastId === undefined || lastId <= end)
  return {
    batches: batches.map((batch) => batch.batchNo),
    nextAfterId: isLastChunk ? null : end,
  }
}

/**
 * Moves the snapshot's cursor past a chunk whose batches are on the queue; after the last chunk,
 * sets `recipients` (and completes a send whose batches all finished meanwhile). False when
 * another delivery of the same message moved it first: only one of them carries on.
 */
export async function advanceSnapshot(
  db: Db,
  newsletter: Pick<NewsletterRow, 'id' | 'snapshotAfterId'>,
  chunk: SnapshotChunk,
  now: Date,
): Promise<boolean> {
  if (chunk.nextAfterId !== null) {
    const moved = await db
      .update(newsletters)
      .set({ snapshotAfterId: chunk.nextAfterId })
      .where(and(eq(newsletters.id, newsletter.id), eq(newsletters.snapshotAfterId, newsletter.snapshotAfterId)))
      .returning({ id: newsletters.id })
    return moved.length === 1
  }
  await db.batch([
    db
      .update(newsletters)
      .set({
        recipients: sql`(select count(*) from ${newsletterDeliveries} where ${newsletterDeliveries.newsletterId} = ${newsletter.id})`,
      })
      // Only from the cursor this chunk was taken at: a late duplicate of an earlier chunk's
      // message, which may see fewer subscribers now, never closes the snapshot early.
      .where(
        and(
          eq(newsletters.id, newsletter.id),
          sql`${newsletters.recipients} is null`,
          eq(newsletters.snapshotAfterId, newsletter.snapshotAfterId),
        ),
      ),
    completion(db, newsletter.id, now),
  ])
  return true
}

/** A recipient of a batch, as handed to the provider. */
export interface BatchRecipient {
  subscriberId: number
  email: string
}

const sendingNow = (id: number) =>
  sql`exists (select 1 from ${newsletters} where ${newsletters.id} = ${id} and ${newsletters.status} = 'sending')`

/** Batches claimed together for sending: the newsletter's content, and each batch's recipients in a fixed order. */
export interface ClaimedBatches {
  newsletter: NewsletterRow
  /** By batch number; a batch with no one left to mail has an empty list. */
  recipients: Map<number, BatchRecipient[]>
}

/**
 * Claims batches of one newsletter, in one round trip: their queued recipients who are no longer
 * active (unsubscribed, bounced, complained, deleted) become `skipped`, the others `sending`, both
 * only while the newsletter is sending. Recipients already `sending` (an attempt that may have
 * reached the provider) stay in their batch as they are, so a retry hands the provider the same
 * recipients in the same order, under the same idempotency key. At most 90 batches at once (each
 * statement binds every batch number).
 */
export async function claimBatches(
  db: Db,
  newsletterId: number,
  batchNos: readonly number[],
  now: Date,
): Promise<ClaimedBatches | undefined> {
  const inBatches = and(
    eq(newsletterDeliveries.newsletterId, newsletterId),
    inArray(newsletterDeliveries.batchNo, [...batchNos]),
  )
  // Correlated, so each recipient is one primary-key lookup: an uncorrelated `not in (select …)`
  // would read every active subscriber once per batch (N²/100 rows for a send to N).
  const stillActive = sql`exists (select 1 from ${subscribers} where ${subscribers.id} = ${newsletterDeliveries.subscriberId} and ${subscribers.status} = 'active')`
  const [found, , , , claimed] = await db.batch([
    db.select().from(newsletters).where(eq(newsletters.id, newsletterId)),
    db
      .update(newsletterDeliveries)
      .set({ status: 'skipped', updatedAt: now })
      .where(
        and(inBatches, eq(newsletterDeliveries.status, 'queued'), sql`not ${stillActive}`, sendingNow(newsletterId)),
      ),
    // changes(): the rows the statement just before changed, in this batch's transaction.
    db
      .update(newsletters)
      .set({ skipped: sql`${newsletters.skipped} + changes()` })
      .where(eq(newsletters.id, newsletterId)),
    db
      .update(newsletterDeliveries)
      .set({ status: 'sending', updatedAt: now })
      .where(and(inBatches, eq(newsletterDeliveries.status, 'queued'), sendingNow(newsletterId))),
    db
      .select({
        batchNo: newsletterDeliveries.batchNo,
        subscriberId: newsletterDeliveries.subscriberId,
        email: newsletterDeliveries.email,
      })
      .from(newsletterDeliveries)
      .where(and(inBatches, eq(newsletterDeliveries.status, 'sending')))
      .orderBy(asc(newsletterDeliveries.batchNo), asc(newsletterDeliveries.subscriberId)),
  ])
  const newsletter = found[0]
  if (newsletter === undefined) return undefined
  const recipients = new Map<number, BatchRecipient[]>(batchNos.map((batchNo) => [batchNo, []]))
  for (const { batchNo, ...recipient } of claimed) recipients.get(batchNo)?.push(recipient)
  return { newsletter, recipients }
}

/** How a provider answered a batch: accepted, or refused for good (its words, the key cut out). */
export type BatchOutcome = { status: 'sent' } | { status: 'failed'; error: string }

/** A batch handed to the provider, and how it went. A batch with no one left to mail counts as sent: it changes no row. */
export interface SettledBatch {
  batchNo: number
  outcome: BatchOutcome
}

/**
 * Records batches' outcomes for the recipients that were handed over (still `sending`), moves the
 * counters by exactly the rows that changed, and completes the send when every recipient is
 * accounted for, in one round trip. Also run after batches with no one left to mail
 * (completion only).
 */
export async function recordBatches(
  db: Db,
  newsletterId: number,
  settledBatches: readonly SettledBatch[],
  now: Date,
): Promise<void> {
  const accepted = settledBatches.filter((batch) => batch.outcome.status === 'sent').map((batch) => batch.batchNo)
  const settle = (batchNos: number[], outcome: BatchOutcome): BatchItem<'sqlite'>[] => {
    const counter = outcome.status === 'sent' ? newsletters.sent : newsletters.failed
    return [
      db
        .update(newsletterDeliveries)
        .set({ status: outcome.status, error: outcome.status === 'failed' ? outcome.error : null, updatedAt: now })
        .where(
          and(
            eq(newsletterDeliveries.newsletterId, newsletterId),
            inArray(newsletterDeliveries.batchNo, batchNos),
            // Exactly the recipients claimBatches handed over: only it sets `sending`, and the
            // newsletter's NewsletterSender runs one attempt per batch at a time. (No id list: a
            // statement takes at most 100 bound parameters.)
            eq(newsletterDeliveries.status, 'sending'),
          ),
        ),
      db
        .update(newsletters)
        .set({ [outcome.status]: sql`${counter} + changes()` })
        .where(eq(newsletters.id, newsletterId)),
    ]
  }
  const statements: BatchItem<'sqlite'>[] = accepted.length > 0 ? settle(accepted, { status: 'sent' }) : []
  // Refused batches one by one: each keeps its own provider's words.
  for (const batch of settledBatches) {
    if (batch.outcome.status === 'failed') statements.push(...settle([batch.batchNo], batch.outcome))
  }
  statements.push(completion(db, newsletterId, now))
  await db.batch(statements as [BatchItem<'sqlite'>, ...BatchItem<'sqlite'>[]])
}

/** The UPDATE that marks a send `sent` once sent + failed + skipped reach `recipients`. */
function completion(db: Db, newsletterId: number, now: Date): BatchItem<'sqlite'> {
  return db
    .update(newsletters)
    .set({ status: 'sent', completedAt: now })
    .where(
      and(
        eq(newsletters.id, newsletterId),
        eq(newsletters.status, 'sending'),
        sql`${newsletters.recipients} is not null`,
        sql`${newsletters.sent} + ${newsletters.failed} + ${newsletters.skipped} >= ${newsletters.recipients}`,
      ),
    )
}

/**
 * A batch the queue gave up on (dead-lettered): its recipients not yet settled are `failed`, and
 * the send stops as `failed`; the counters say how far it got.
 */
export async function failDeadLetteredBatch(
  db: Db,
  newsletterId: number,
  batchNo: number,
  error: string,
  now: Date,
): Promise<void> {
  const unsettled: DeliveryStatus[] = ['queued', 'sending']
  await db.batch([
    db
      .update(newsletterDeliveries)
      .set({ status: 'failed', error, updatedAt: now })
      .where(
        and(
          eq(newsletterDeliveries.newsletterId, newsletterId),
          eq(newsletterDeliveries.batchNo, batchNo),
          inArray(newsletterDeliveries.status, unsettled),
        ),
      ),
    db
      .update(newsletters)
      .set({ failed: sql`${newsletters.failed} + changes()` })
      .where(eq(newsletters.id, newsletterId)),
    db
      .update(newsletters)
      .set({ status: 'failed', completedAt: now })
      .where(and(eq(newsletters.id, newsletterId), eq(newsletters.status, 'sending'))),
  ])
}

/** Cancels a send that has not finished; undefined when there was none to cancel. */
export async function cancelNewsletter(db: Db, id: number, now: Date): Promise<NewsletterRow | undefined> {
  const [row] = await db
    .update(newsletters)
    .set({ status: 'cancelled', completedAt: now })
    .where(and(eq(newsletters.id, id), inArray(newsletters.status, ['scheduled', 'sending'])))
    .returning()
  return row
}

/** A scheduled send follows its post's new publication time. */
export function rescheduleNewsletter(db: Db, postId: number, scheduledFor: Date): BatchItem<'sqlite'> {
  return db
    .update(newsletters)
    .set({ scheduledFor })
    .where(and(eq(newsletters.postId, postId), eq(newsletters.status, 'scheduled')))
}

/** Scheduled sends due by `until` (the cron hands them to the queue, delayed to their time). */
export function dueNewsletters(db: Db, until: Date) {
  return db
    .select({ id: newsletters.id, scheduledFor: newsletters.scheduledFor })
    .from(newsletters)
    .where(and(eq(newsletters.status, 'scheduled'), lte(newsletters.scheduledFor, until)))
    .limit(100)
}

/**
 * Sends whose snapshot stopped: never started (a lost start message) or started before
 * `startedBefore` and still without `recipients` (a lost snapshot message). The cron hands them
 * on again; a duplicate finds nothing to do.
 */
export function stalledSends(db: Db, startedBefore: Date) {
  return db
    .select({ id: newsletters.id, startedAt: newsletters.startedAt })
    .from(newsletters)
    .where(
      and(
        eq(newsletters.status, 'sending'),
        sql`(${newsletters.startedAt} is null or (${newsletters.recipients} is null and ${newsletters.startedAt} < ${startedBefore.getTime()}))`,
      ),
    )
    .limit(100)
}

/** How many active subscribers a send would reach now (a dry run). */
export async function countActiveSubscribers(db: Db): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)` }).from(subscribers).where(eq(subscribers.status, 'active'))
  return row?.n ?? 0
}
