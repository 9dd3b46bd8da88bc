import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { createDb } from '../../src/db/client'
import type { Db } from '../../src/db/client'
import type { BatchRecipient } from '../../src/db/newsletters'
import type { NewsletterBatch } from '../../src/lib/mail-queue-messages'
import { retryDelaySeconds } from '../../src/newsletters/consumer'
import { batchIdempotencyKey, deliverBatch } from '../../src/newsletters/deliver'
import type { BatchResult } from '../../src/newsletters/deliver'
import type { NewsletterSender } from '../../src/newsletters/sender'
import { senderOf } from '../../src/newsletters/sender-stub'
import { MAX_QUEUE_DELAY_SECONDS, queueStart, startSend } from '../../src/newsletters/start'
import { api } from '../helpers'
import { MAIL_PROVIDER_API_KEY } from '../mail-provider'
import type { MailScenario, ProviderRequest } from '../mail-provider'
import {
  RecordingQueue,
  consume,
  createPost,
  db,
  deleteCreatedSubscribers,
  deliveredFor,
  deliveredTo,
  eventually,
  expectCountersMatchLedger,
  faultyD1,
  gate,
  httpDeps,
  insertSubscribers,
  ledger,
  newAdmin,
  newScenario,
  newsletterOf,
  newsletterRow,
  routeConsoleMailTo,
  setSubscriberStatus,
  snapshotBatches,
  startDeps,
  unsubscribeToken,
  workerEnv,
} from './support'
import type { TestSubscriber, WorkerEnv } from './support'

// Fault injection, driven step by step: the tests hand the pipeline's queue messages on
// themselves (a recording queue instead of the real one), so they can deliver a message twice,
// drop it, or make D1 or the provider fail at a chosen step, and then check that every active
// subscriber was mailed exactly once at the fake provider (test/mail-provider.ts, which
// deduplicates by Idempotency-Key as a real provider does) and that the counters add up.

const scenarios: MailScenario[] = []

function scenario(): MailScenario {
  const created = newScenario()
  scenarios.push(created)
  return created
}

afterEach(async () => {
  vi.restoreAllMocks()
  // A held request is answered (and forgotten) so that nothing waits after the test.
  for (const created of scenarios.splice(0)) await created.clear()
})

afterAll(deleteCreatedSubscribers)

/** The error (drizzle wraps D1's in its cause) is D1's lost connection. */
function d1Lost(err: unknown): boolean {
  for (let cause = err, depth = 0; cause instanceof Error && depth < 5; cause = cause.cause, depth++) {
    if (/Network connection lost/.test(cause.message)) return true
  }
  return false
}

/** The batch number in an idempotency key (`edgepress-newsletter-<id>-<batch>-<digest>`). */
function batchOfKey(key: string | null): number {
  const match = /^edgepress-newsletter-\d+-(\d+)-[\w-]+$/.exec(key ?? '')
  if (match === null) throw new Error(`not a batch key: ${key}`)
  return Number(match[1])
}

/** Subscribers inserted in one batch get consecutive ids: a send can start right before them. */
async function startBefore(newsletterId: number, subscribers: TestSubscriber[]): Promise<void> {
  const first = Math.min(...subscribers.map((subscriber) => subscriber.id))
  await env.DB.prepare('UPDATE newsletters SET snapshot_after_id = ? WHERE id = ?')
    .bind(first - 1, newsletterId)
    .run()
}

/** A new send of a new post to `count` new active subscribers, started right before them, and its snapshot's batches. */
async function snapshotOfNewSend(count: number) {
  const admin = await newAdmin()
  const post = await createPost(admin)
  const subscribers = await insertSubscribers(count)
  const newsletter = await newsletterOf(admin, post)
  await startBefore(newsletter.id, subscribers)
  const batches = await snapshotBatches(newsletter.id)
  return { admin, post, subscribers, newsletter, batches }
}

/** The ledger's batch of a subscriber. */
async function batchOf(newsletterId: number, subscriber: TestSubscriber, batches: NewsletterBatch[]) {
  const row = (await ledger(newsletterId, [subscriber])).get(subscriber.id)
  const batch = batches.find((candidate) => candidate.batchNo === row?.batch_no)
  if (batch === undefined) throw new Error(`subscriber ${subscriber.id} is in no batch`)
  return batch
}

/** The requests of one newsletter's batches. */
function requestsFor(requests: ProviderRequest[], newsletterId: number): ProviderRequest[] {
  return requests.filter((request) => request.idempotencyKey?.startsWith(`edgepress-newsletter-${newsletterId}-`))
}

/** Every batch key is used for one batch only, and always with the same recipients in the same order. */
function expectOneKeyPerBatch(requests: ProviderRequest[], newsletterId: number): void {
  const ours = requestsFor(requests, newsletterId)
  const keysByBatch = new Map<number, Set<string>>()
  const recipientsByKey = new Map<string, string>()
  for (const request of ours) {
    const key = request.idempotencyKey!
    const batchNo = batchOfKey(key)
    keysByBatch.set(batchNo, new Set([...(keysByBatch.get(batchNo) ?? []), key]))
    const recipients = JSON.stringify(request.recipients)
    expect(recipientsByKey.get(key) ?? recipients, `the recipients of ${key}`).toBe(recipients)
    recipientsByKey.set(key, recipients)
  }
  for (const [batchNo, keys] of keysByBatch) expect(keys.size, `keys of batch ${batchNo}`).toBe(1)
  // A recipient is in one batch, so under one key.
  const keysByRecipient = new Map<string, Set<string>>()
  for (const request of ours) {
    for (const to of request.recipients) {
      keysByRecipient.set(to, new Set([...(keysByRecipient.get(to) ?? []), request.idempotencyKey!]))
    }
  }
  for (const [to, keys] of keysByRecipient) expect(keys.size, `keys of ${to}`).toBe(1)
}

describe('every active subscriber is mailed exactly once, whatever fails', () => {
  it('through D1 failures at each step, provider 5xx, 429, timeouts, lost answers and redelivered messages', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const staying = await insertSubscribers(240)
    const leaving = await insertSubscribers(8)
    const never = [
      ...(await insertSubscribers(2, 'unsubscribed')),
      ...(await insertSubscribers(1, 'bounced')),
      ...(await insertSubscribers(1, 'complained')),
      ...(await insertSubscribers(1, 'pending')),
    ]
    const newsletter = await newsletterOf(admin, post)
    const provider = scenario()

    // The start message: D1 is lost after the first chunk's ledger rows were written, before any
    // batch reached the queue. Its redelivery carries on from there.
    const queue = new RecordingQueue()
    const readBack = /^select "batch_no", max\("subscriber_id"\) from "newsletter_deliveries"/
    const startDb = createDb({ DB: faultyD1(env.DB, [{ matches: readBack }]) })
    expect(d1Lost(await startSend(startDeps(queue, startDb), newsletter.id, new Date()).catch((err) => err))).toBe(true)
    expect(queue.messages).toEqual([])
    expect((await ledger(newsletter.id, staying)).size).toBe(staying.length)
    expect((await newsletterRow(newsletter.id)).recipients).toBeNull()

    const batches = await snapshotBatches(newsletter.id)
    const row = await newsletterRow(newsletter.id)
    expect(row.status).toBe('sending')
    expect(row.recipients).toBeGreaterThanOrEqual(staying.length + leaving.length)
    // Subscribed after the snapshot: not a recipient of this send.
    const late = await insertSubscribers(3)
    // Delivered a third time: it finds the send started and its snapshot complete.
    const again = new RecordingQueue()
    await startSend(startDeps(again), newsletter.id, new Date())
    expect(again.messages).toEqual([])

    // Between the snapshot and their email: two unsubscribe with their link, two bounce, two
    // complain, two are deleted. None of them is mailed; each counts as skipped.
    for (const subscriber of leaving.slice(0, 2)) {
      const res = await api('POST', '/subscribers/unsubscribe', { token: await unsubscribeToken(subscriber.email) })
      expect(res.status).toBe(200)
    }
    await setSubscriberStatus(leaving.slice(2, 4), 'bounced')
    await setSubscriberStatus(leaving.slice(4, 6), 'complained')
    await env.DB.prepare('DELETE FROM subscribers WHERE id IN (?, ?)').bind(leaving[6]!.id, leaving[7]!.id).run()

    // The provider: a batch it sent but answered 500, a 503, a 429 with Retry-After, and one it
    // sent and never answered (the transport times out: shortened here from 20 s).
    await provider.setFaults([
      { fault: { kind: 'status', status: 500, accept: true } },
      { fault: { kind: 'status', status: 503 } },
      { fault: { kind: 'status', status: 429, retryAfter: '7' } },
      { fault: { kind: 'hang', accept: true } },
    ])
    const timeout = AbortSignal.timeout.bind(AbortSignal)
    vi.spyOn(AbortSignal, 'timeout').mockImplementation(() => timeout(1_500))
    // D1: a claim that fails, a record that fails before it commits (after the provider took the
    // batch: a crash), and one whose answer is lost after it committed.
    const claim = /set "skipped" = "newsletters"."skipped" \+ changes\(\)/
    const record = /set "sent" = "newsletters"."sent" \+ changes\(\)/
    const deliveryDb = createDb({
      DB: faultyD1(env.DB, [{ matches: claim }, { matches: record }, { matches: record, after: true }]),
    })
    const deps = await httpDeps(provider, deliveryDb)

    // The queue: a message that fails comes back; every message comes back once more after it
    // succeeded (at-least-once delivery).
    const pending = [...batches]
    const redelivered = new Set<number>()
    const retries: Extract<BatchResult, { done: false }>[] = []
    let thrown = 0
    for (let step = 0; pending.length > 0; step++) {
      if (step > 20 * batches.length + 50) throw new Error('the send does not converge')
      const message = pending.shift()!
      let result: BatchResult
      try {
        result = await deliverBatch(deps, message, new Date())
      } catch (err) {
        expect(d1Lost(err), String(err)).toBe(true)
        thrown += 1
        pending.push(message)
        continue
      }
      if (!result.done) {
        retries.push(result)
        pending.push(message)
      } else if (!redelivered.has(message.batchNo)) {
        redelivered.add(message.batchNo)
        pending.push(message)
      }
    }
    await provider.release()

    expect(thrown).toBe(3)
    expect(retries.map((retry) => retry.retryAfterSeconds)).toContain(7)
    expect(retries.length).toBeGreaterThanOrEqual(4)
    for (const retry of retries) expect(retry).toMatchObject({ done: false, error: expect.any(String) })

    const final = await expectCountersMatchLedger(newsletter.id)
    expect(final.status).toBe('sent')
    expect(final.completedAt).not.toBeNull()
    const rows = await ledger(newsletter.id)
    for (const subscriber of staying) expect(rows.get(subscriber.id)?.status).toBe('sent')
    for (const subscriber of leaving) expect(rows.get(subscriber.id)?.status).toBe('skipped')
    for (const subscriber of [...never, ...late]) expect(rows.has(subscriber.id)).toBe(false)

    const state = await provider.state()
    expect(state.requests.map((request) => request.answer)).toEqual(expect.arrayContaining([500, 503, 429]))
    expect(state.requests.some((request) => request.held)).toBe(true)
    expect(state.requests.some((request) => request.deduplicated)).toBe(true)
    const mine = deliveredTo(state.delivered, newsletter.id, [...staying, ...leaving, ...never, ...late])
    for (const subscriber of staying) expect(mine.get(subscriber.email)?.length, subscriber.email).toBe(1)
    for (const subscriber of [...leaving, ...never, ...late]) expect(mine.has(subscriber.email)).toBe(false)
    // Everyone else in the snapshot too: one email per recipient sent, none twice.
    const all = deliveredFor(state.delivered, newsletter.id)
    expect(new Set(all.map((email) => email.to)).size).toBe(all.length)
    expect(all.length).toBe(final.sent)
    expectOneKeyPerBatch(state.requests, newsletter.id)
  })

  it('a snapshot message redelivered after a failure hands on every batch it took, also one whose subscribers all left since', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const subscribers = await insertSubscribers(200)
    const newsletter = await newsletterOf(admin, post)
    await startBefore(newsletter.id, subscribers)
    const queue = new RecordingQueue()
    // The batches never reach the queue: the queue is down.
    const failing = { ...queue, sendBatch: () => Promise.reject(new Error('Queue send failed')) }
    await expect(startSend(startDeps(failing as unknown as RecordingQueue), newsletter.id, new Date())).rejects.toThrow(
      /Queue send failed/,
    )
    const taken = await ledger(newsletter.id, subscribers)
    const secondBatch = subscribers.filter((subscriber) => taken.get(subscriber.id)?.batch_no === 1)
    expect(secondBatch).toHaveLength(100)
    // Before the retry, every subscriber of the second batch leaves the list.
    await setSubscriberStatus(secondBatch, 'unsubscribed')

    const batches = await snapshotBatches(newsletter.id)
    expect(batches.map((batch) => batch.batchNo)).toEqual(expect.arrayContaining([0, 1]))
    const provider = scenario()
    const deps = await httpDeps(provider)
    for (const batch of batches) expect(await deliverBatch(deps, batch, new Date())).toEqual({ done: true })

    const final = await expectCountersMatchLedger(newsletter.id)
    expect(final.status).toBe('sent')
    const rows = await ledger(newsletter.id, subscribers)
    for (const subscriber of secondBatch) expect(rows.get(subscriber.id)?.status).toBe('skipped')
    const mine = deliveredTo((await provider.state()).delivered, newsletter.id, subscribers)
    expect(mine.size).toBe(100)
    for (const subscriber of secondBatch) expect(mine.has(subscriber.email)).toBe(false)
  })

  it('a batch delivered twice at once through its NewsletterSender reaches the provider once', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const subscribers = await insertSubscribers(3)
    const newsletter = await newsletterOf(admin, post)
    const batches = await snapshotBatches(newsletter.id)
    const batch = await batchOf(newsletter.id, subscribers[0]!, batches)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await provider.setFaults([{ fault: { kind: 'hang' } }])
    const sender = senderOf(workerEnv, newsletter.id)

    const first = sender.deliver(batch)
    await eventually(
      () => provider.state(),
      (state) => state.held === 1,
      'the first attempt at the provider',
    )
    const second = sender.deliver(batch)
    await provider.release()
    expect(await first).toEqual({ done: true })
    expect(await second).toEqual({ done: true })
    // And once more, later: the ledger says it is done.
    expect(await sender.deliver(batch)).toEqual({ done: true })

    const state = await provider.state()
    const requests = state.requests.filter((request) => batchOfKey(request.idempotencyKey) === batch.batchNo)
    expect(requests).toHaveLength(1)
    const mine = deliveredTo(state.delivered, newsletter.id, subscribers)
    for (const subscriber of subscribers) expect(mine.get(subscriber.email)?.length).toBe(1)
    const rows = await ledger(newsletter.id, subscribers)
    for (const subscriber of subscribers) expect(rows.get(subscriber.id)?.status).toBe('sent')
  })
})

describe('batches that arrive together', () => {
  /** The drizzle database, recording the SQL of every batch it runs (one round trip each). */
  function recordingBatches(): { database: Db; batches: string[][] } {
    const batches: string[][] = []
    const database = new Proxy(db, {
      get(target, property) {
        if (property !== 'batch') return Reflect.get(target, property, target)
        return (items: { toSQL: () => { sql: string } }[]) => {
          batches.push(items.map((item) => item.toSQL().sql))
          return target.batch(items as unknown as Parameters<Db['batch']>[0])
        }
      },
    })
    return { database, batches }
  }

  it('are claimed in one round trip, and each recipient ends mailed once, skipped or failed with their own batch’s outcome', async () => {
    const { subscribers, newsletter, batches } = await snapshotOfNewSend(450)
    expect(batches).toHaveLength(5)
    const leaving = subscribers.slice(100, 110)
    await setSubscriberStatus(leaving, 'unsubscribed')
    const refusedOne = subscribers[250]!
    const provider = scenario()
    await provider.setFaults([{ recipient: refusedOne.email, fault: { kind: 'status', status: 422 } }])
    const { database, batches: roundTrips } = recordingBatches()
    const deps = await httpDeps(provider, database)

    // As the consumer hands a delivery's batches to the NewsletterSender: all at once.
    const results = await Promise.all(batches.map((batch) => deliverBatch(deps, batch, new Date())))
    expect(results).toEqual(batches.map(() => ({ done: true })))

    const claims = roundTrips.filter((sqls) => sqls.some((sql) => /set "status" = \?, "updated_at" = \?/.test(sql)))
    expect(claims).toHaveLength(1)
    expect(claims[0]!.some((sql) => /"batch_no" in \(\?, \?, \?, \?, \?\)/.test(sql))).toBe(true)
    const records = roundTrips.filter((sqls) => sqls.some((sql) => /set "status" = \?, "error" = \?/.test(sql)))
    expect(records.length).toBeGreaterThanOrEqual(1)
    expect(records.length).toBeLessThanOrEqual(batches.length)

    const final = await expectCountersMatchLedger(newsletter.id)
    expect(final).toMatchObject({ status: 'sent', recipients: 450, sent: 340, failed: 100, skipped: 10 })
    const rows = await ledger(newsletter.id, subscribers)
    const refusedBatch = rows.get(refusedOne.id)!.batch_no
    for (const subscriber of subscribers) {
      const row = rows.get(subscriber.id)!
      if (leaving.includes(subscriber)) expect(row.status).toBe('skipped')
      else if (row.batch_no === refusedBatch) {
        expect(row.status).toBe('failed')
        expect(row.error).toContain('HTTP 422 from the mail provider')
      } else expect(row).toMatchObject({ status: 'sent', error: null })
    }
    const mine = deliveredTo((await provider.state()).delivered, newsletter.id, subscribers)
    expect(mine.size).toBe(340)
    for (const recipients of mine.values()) expect(recipients).toHaveLength(1)
  })
})

describe('the queue consumer', () => {
  it('acknowledges what is done, retries the rest after Retry-After or the backoff, and one failing message does not stop the others', async () => {
    const { admin, subscribers, newsletter, batches } = await snapshotOfNewSend(250)
    const [rateLimited, failing, fine] = await Promise.all(
      [subscribers[0]!, subscribers[100]!, subscribers[200]!].map((subscriber) =>
        batchOf(newsletter.id, subscriber, batches),
      ),
    )
    expect(new Set([rateLimited!.batchNo, failing!.batchNo, fine!.batchNo]).size).toBe(3)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await provider.setFaults([
      { recipient: subscribers[0]!.email, fault: { kind: 'status', status: 429, retryAfter: '7' } },
      { recipient: subscribers[100]!.email, fault: { kind: 'status', status: 502 } },
    ])
    // A start message of another send, whose D1 fails: it throws inside the consumer.
    const otherPost = await createPost(admin)
    const other = await newsletterOf(admin, otherPost)
    const startsFail: WorkerEnv = {
      ...env,
      DB: faultyD1(env.DB, [{ matches: /^update "newsletters" set "status" = \?, "subject"/ }]),
    }
    const bodies = [rateLimited!, { kind: 'newsletter-start' as const, newsletterId: other.id }, failing!, fine!]
    const { messages, acked, retried } = await consume(bodies, { env: startsFail, attempts: 3 })

    expect(retried.get(messages[0]!.id)).toBe(7)
    expect(retried.get(messages[1]!.id)).toBe(retryDelaySeconds(3))
    expect(retried.get(messages[2]!.id)).toBe(retryDelaySeconds(3))
    expect(acked.has(messages[3]!.id)).toBe(true)
    expect(acked.size + retried.size).toBe(4)
    expect((await newsletterRow(other.id)).startedAt).toBeNull()

    // Retried, they go through under the same keys.
    const retriedBodies = [rateLimited!, failing!]
    const second = await consume(retriedBodies, { attempts: 4 })
    expect(second.acked.size).toBe(2)
    const state = await provider.state()
    const mine = deliveredTo(state.delivered, newsletter.id, subscribers)
    for (const subscriber of subscribers) expect(mine.get(subscriber.email)?.length, subscriber.email).toBe(1)
    expectOneKeyPerBatch(state.requests, newsletter.id)
    // The start, retried with D1 back, starts the other send.
    await startSend(startDeps(new RecordingQueue()), other.id, new Date())
    expect((await newsletterRow(other.id)).startedAt).not.toBeNull()
  })

  it('a dead-lettered batch fails its recipients and the send, which says how far it got', async () => {
    const { admin, post, subscribers, newsletter, batches } = await snapshotOfNewSend(250)
    const [first, second, third] = batches
    const provider = scenario()
    routeConsoleMailTo(provider)
    expect((await consume([first!])).acked.size).toBe(1)
    // GET shows the counters as they move.
    const live = await api('GET', `/posts/${post.id}/newsletter`, undefined, admin.token)
    const progress = (await live.json()) as { status: string; sent: number; recipients: number }
    expect(progress).toMatchObject({ status: 'sending', sent: 100, failed: 0, skipped: 0 })
    expect(progress.recipients).toBeGreaterThanOrEqual(250)
    // The second batch keeps failing (its recipients are handed over, `sending`), until the queue
    // gives up and hands it to the dead-letter queue.
    await provider.setFaults([{ batchOnly: true, always: true, fault: { kind: 'status', status: 503 } }])
    expect((await consume([second!], { attempts: 6 })).retried.size).toBe(1)
    const dead = await consume([second!], { queueName: 'edgepress-mail-dlq' })
    expect(dead.acked.size).toBe(1)

    const row = await newsletterRow(newsletter.id)
    expect(row).toMatchObject({ status: 'failed', sent: 100, failed: 100, skipped: 0 })
    expect(row.completedAt).not.toBeNull()
    const rows = await ledger(newsletter.id, subscribers.slice(100, 200))
    for (const entry of rows.values()) {
      expect(entry.status).toBe('failed')
      expect(entry.error).toMatch(/dead-lettered/)
    }
    // The rest of the send does not go out; a second dead letter of the same batch counts nothing twice.
    await provider.setFaults([])
    expect((await consume([third!])).acked.size).toBe(1)
    await consume([second!], { queueName: 'edgepress-mail-dlq' })
    expect(await newsletterRow(newsletter.id)).toMatchObject({ status: 'failed', sent: 100, failed: 100 })
    const mine = deliveredTo((await provider.state()).delivered, newsletter.id, subscribers)
    expect(mine.size).toBe(100)
    for (const subscriber of subscribers.slice(100)) expect(mine.has(subscriber.email)).toBe(false)

    const res = await api('GET', `/posts/${post.id}/newsletter`, undefined, admin.token)
    expect(await res.json()).toMatchObject({ status: 'failed', sent: 100, failed: 100, skipped: 0 })
  })

  it('a dead-lettered snapshot fails a send in progress; a dead-lettered start of a scheduled send waits for the cron', async () => {
    const admin = await newAdmin()
    await insertSubscribers(2)
    const post = await createPost(admin)
    const newsletter = await newsletterOf(admin, post)
    await consume([{ kind: 'newsletter-snapshot', newsletterId: newsletter.id }], { queueName: 'edgepress-mail-dlq' })
    expect(await newsletterRow(newsletter.id)).toMatchObject({ status: 'failed', recipients: null })

    const later = await createPost(admin, {
      status: 'scheduled',
      published_at: new Date(Date.now() + 3_600_000).toISOString(),
    })
    const scheduled = await newsletterOf(admin, later, new Date(later.published_at!))
    await consume([{ kind: 'newsletter-start', newsletterId: scheduled.id }], { queueName: 'edgepress-mail-dlq' })
    expect((await newsletterRow(scheduled.id)).status).toBe('scheduled')
    // Not left for another test's cron to start.
    await env.DB.prepare("UPDATE newsletters SET status = 'cancelled' WHERE id = ?").bind(scheduled.id).run()
  })
})

describe('starting', () => {
  it('a start is queued delayed to its time, at most the queue’s 12 hours ahead (the cron starts later ones)', async () => {
    const now = new Date()
    const queue = new RecordingQueue()
    await queueStart(queue, 1, null, now)
    await queueStart(queue, 2, new Date(now.getTime() + 10_500), now)
    await queueStart(queue, 3, new Date(now.getTime() - 60_000), now)
    await queueStart(queue, 4, new Date(now.getTime() + MAX_QUEUE_DELAY_SECONDS * 1000), now)
    await queueStart(queue, 5, new Date(now.getTime() + MAX_QUEUE_DELAY_SECONDS * 1000 + 1000), now)
    expect(queue.messages).toEqual([
      { body: { kind: 'newsletter-start', newsletterId: 1 }, delaySeconds: 0 },
      { body: { kind: 'newsletter-start', newsletterId: 2 }, delaySeconds: 11 },
      { body: { kind: 'newsletter-start', newsletterId: 3 }, delaySeconds: 0 },
      { body: { kind: 'newsletter-start', newsletterId: 4 }, delaySeconds: MAX_QUEUE_DELAY_SECONDS },
    ])
  })

  it('a scheduled send starts at its time, not before; a start delivered early waits again', async () => {
    const admin = await newAdmin()
    const at = new Date(Date.now() + 3_600_000)
    const post = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    const newsletter = await newsletterOf(admin, post, at)
    const queue = new RecordingQueue()
    await startSend(startDeps(queue), newsletter.id, new Date(at.getTime() - 90_000))
    expect(await newsletterRow(newsletter.id)).toMatchObject({ status: 'scheduled', startedAt: null, recipients: null })
    expect(queue.take()).toEqual([
      { body: { kind: 'newsletter-start', newsletterId: newsletter.id }, delaySeconds: 90 },
    ])
    await startSend(startDeps(queue), newsletter.id, at)
    const row = await newsletterRow(newsletter.id)
    expect(row).toMatchObject({
      status: 'sending',
      startedAt: at,
      subject: post.title,
      text: post.body,
      postUrl: post.url,
    })
    expect(row.recipients).not.toBeNull()
    expect(queue.take().every((message) => message.body.kind === 'newsletter-batch')).toBe(true)
  })

  it('a due send whose post is no longer public (its cancel or move failed half-way) mails nobody and follows the post', async () => {
    const admin = await newAdmin()
    await insertSubscribers(2)
    const at = new Date(Date.now() + 3_600_000)
    const later = new Date(at.getTime() + 86_400_000)
    // As PATCH leaves things when the post is saved and the send's cancel or move then fails.
    const toDraft = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    const moved = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    const drafted = await newsletterOf(admin, toDraft, at)
    const postponed = await newsletterOf(admin, moved, at)
    await env.DB.batch([
      env.DB.prepare('UPDATE posts SET published_at = NULL WHERE id = ?').bind(toDraft.id),
      env.DB.prepare('UPDATE posts SET published_at = ? WHERE id = ?').bind(later.getTime(), moved.id),
    ])
    const queue = new RecordingQueue()
    await startSend(startDeps(queue), drafted.id, at)
    expect(await newsletterRow(drafted.id)).toMatchObject({
      status: 'cancelled',
      startedAt: null,
      recipients: null,
      completedAt: at,
    })
    expect(queue.take()).toEqual([])
    await startSend(startDeps(queue), postponed.id, at)
    expect(await newsletterRow(postponed.id)).toMatchObject({
      status: 'scheduled',
      scheduledFor: later,
      startedAt: null,
      recipients: null,
    })
    // Handed back to the cron: a day is beyond what one queue message may wait.
    expect(queue.take()).toEqual([])
    // At the post's new time it goes.
    await startSend(startDeps(queue), postponed.id, later)
    expect(await newsletterRow(postponed.id)).toMatchObject({ status: 'sending', startedAt: later })
    expect(queue.take().some((message) => message.body.kind === 'newsletter-batch')).toBe(true)
  })

  it('what every recipient gets is fixed at the start: an edit of the post mid-send changes nothing', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const subscribers = await insertSubscribers(2)
    const newsletter = await newsletterOf(admin, post)
    const batches = await snapshotBatches(newsletter.id)
    const edit = await api('PATCH', `/posts/${post.id}`, { title: 'Another title', body: 'Another body' }, admin.token)
    expect(edit.status).toBe(200)
    const provider = scenario()
    const deps = await httpDeps(provider)
    for (const batch of batches) await deliverBatch(deps, batch, new Date())
    for (const emails of deliveredTo((await provider.state()).delivered, newsletter.id, subscribers).values()) {
      expect(emails[0]!.subject).toBe(post.title)
      expect(emails[0]!.text).toContain(post.body)
      expect(emails[0]!.text).not.toContain('Another')
    }
  })
})

describe('what the provider refuses for good', () => {
  it('a 4xx fails the batch’s recipients with the provider’s words, the API key cut out, and is not retried', async () => {
    const { subscribers, newsletter, batches } = await snapshotOfNewSend(150)
    const provider = scenario()
    await provider.setFaults([
      {
        recipient: subscribers[0]!.email,
        fault: {
          kind: 'status',
          status: 422,
          body: '{"name":"validation_error","message":"The sender domain is not verified (key {authorization})"}',
        },
      },
    ])
    const deps = await httpDeps(provider)
    for (const batch of batches) expect(await deliverBatch(deps, batch, new Date())).toEqual({ done: true })
    // Delivered again: nothing more is tried for them.
    for (const batch of batches) expect(await deliverBatch(deps, batch, new Date())).toEqual({ done: true })

    const final = await expectCountersMatchLedger(newsletter.id)
    expect(final.status).toBe('sent')
    expect(final.failed).toBe(100)
    const rows = await ledger(newsletter.id, subscribers)
    for (const subscriber of subscribers.slice(0, 100)) {
      const entry = rows.get(subscriber.id)!
      expect(entry.status).toBe('failed')
      expect(entry.error).toContain('HTTP 422 from the mail provider')
      expect(entry.error).toContain('The sender domain is not verified')
      expect(entry.error).toContain('[redacted]')
      expect(entry.error).not.toContain(MAIL_PROVIDER_API_KEY)
    }
    for (const subscriber of subscribers.slice(100)) expect(rows.get(subscriber.id)?.status).toBe('sent')
    const state = await provider.state()
    const refused = state.requests.filter((request) => request.answer === 422)
    expect(refused).toHaveLength(1)
    expect(deliveredTo(state.delivered, newsletter.id, subscribers).size).toBe(50)
  })
})

describe('idempotency keys', () => {
  const a: BatchRecipient = { subscriberId: 1, email: 'a@example.com' }
  const b: BatchRecipient = { subscriberId: 2, email: 'b@example.com' }

  it('are the same for the same newsletter, batch and recipients in order, and differ otherwise', async () => {
    const created = new Date('2026-05-01T10:00:00.000Z')
    const newsletter = { id: 7, createdAt: created }
    const key = await batchIdempotencyKey(newsletter, 3, [a, b])
    expect(await batchIdempotencyKey({ ...newsletter }, 3, [a, b])).toBe(key)
    const others = await Promise.all([
      batchIdempotencyKey(newsletter, 4, [a, b]),
      batchIdempotencyKey({ ...newsletter, id: 8 }, 3, [a, b]),
      batchIdempotencyKey(newsletter, 3, [b, a]),
      batchIdempotencyKey(newsletter, 3, [a]),
      batchIdempotencyKey({ ...newsletter, id: 73 }, 3, [a, b]),
      batchIdempotencyKey(newsletter, 33, [a, b]),
      // Newsletter 7 of another database (ids start at 1 in each) that shares the provider account.
      batchIdempotencyKey({ id: 7, createdAt: new Date(created.getTime() + 1) }, 3, [a, b]),
    ])
    expect(new Set([key, ...others]).size).toBe(others.length + 1)
    // What providers accept: short, URL-safe.
    for (const candidate of [key, ...others]) expect(candidate).toMatch(/^[\w-]{1,256}$/)
  })

  it('are the same on every retry of a batch and differ between batches and between sends', async () => {
    const admin = await newAdmin()
    const subscribers = await insertSubscribers(150)
    const provider = scenario()
    const keys: string[][] = []
    for (const _round of [0, 1]) {
      const post = await createPost(admin)
      const newsletter = await newsletterOf(admin, post)
      await startBefore(newsletter.id, subscribers)
      const batches = await snapshotBatches(newsletter.id)
      const deps = await httpDeps(provider)
      // Every batch is taken but answered 500, so that each is tried twice.
      await provider.setFaults([{ always: true, fault: { kind: 'status', status: 500, accept: true } }])
      for (const batch of batches) expect((await deliverBatch(deps, batch, new Date())).done).toBe(false)
      await provider.setFaults([])
      for (const batch of batches) expect(await deliverBatch(deps, batch, new Date())).toEqual({ done: true })
      const requests = (await provider.state()).requests.filter((request) =>
        request.idempotencyKey?.startsWith(`edgepress-newsletter-${newsletter.id}-`),
      )
      expect(requests.length).toBe(batches.length * 2)
      expectOneKeyPerBatch(requests, newsletter.id)
      keys.push([...new Set(requests.map((request) => request.idempotencyKey!))])
    }
    expect(new Set(keys.flat()).size).toBe(keys[0]!.length + keys[1]!.length)
  })
})

describe('cancelling while a batch is at the provider', () => {
  /** A send of `count` subscribers, snapshotted, its batches for the test to deliver. */
  async function sendInProgress(count: number) {
    const { admin, post, subscribers, newsletter, batches } = await snapshotOfNewSend(count)
    const provider = scenario()
    routeConsoleMailTo(provider)
    return { admin, post, subscribers, newsletter, batches, provider }
  }

  /** Holds every provider request; answers once the send's first batch is held there. */
  async function holdFirstBatch(provider: MailScenario, newsletterId: number, batches: NewsletterBatch[]) {
    await provider.setFaults([{ always: true, fault: { kind: 'hang' } }])
    const sender = senderOf(workerEnv, newsletterId)
    const inFlight = sender.deliver(batches[0]!)
    await eventually(
      () => provider.state(),
      (state) => state.held === 1,
      'the first batch at the provider',
    )
    return { sender, inFlight }
  }

  /**
   * Sends a request that cancels the send while a batch is held at the provider: D1 says
   * cancelled, yet the request has not answered; then the batch is released, and its answer comes.
   */
  async function answerAfterCancel(
    provider: MailScenario,
    newsletterId: number,
    request: () => Promise<Response>,
  ): Promise<Response> {
    let answered = false
    const pending = request().then((res) => {
      answered = true
      return res
    })
    await eventually(
      () => newsletterRow(newsletterId),
      (row) => row.status === 'cancelled',
      'the cancel in D1',
    )
    // The batch is still held at the provider, so the cancel cannot have answered.
    expect(answered).toBe(false)
    await provider.setFaults([])
    await provider.release()
    return pending
  }

  it('DELETE answers once the batch in flight is done; no email leaves after the answer', async () => {
    const { admin, post, subscribers, newsletter, batches, provider } = await sendInProgress(250)
    const { sender, inFlight } = await holdFirstBatch(provider, newsletter.id, batches)

    const res = await answerAfterCancel(provider, newsletter.id, () =>
      api('DELETE', `/posts/${post.id}/newsletter`, undefined, admin.token),
    )
    expect(res.status).toBe(200)
    const view = (await res.json()) as { status: string; sent: number }
    expect(view.status).toBe('cancelled')
    const atAnswer = await provider.state()
    expect(await inFlight).toEqual({ done: true })

    // Everything still on the queue is delivered, twice: nothing reaches the provider.
    for (const batch of [...batches, ...batches]) expect(await sender.deliver(batch)).toEqual({ done: true })
    const { acked } = await consume(batches)
    expect(acked.size).toBe(batches.length)
    const after = await provider.state()
    expect(requestsFor(after.requests, newsletter.id)).toEqual(requestsFor(atAnswer.requests, newsletter.id))
    expect(deliveredFor(after.delivered, newsletter.id)).toEqual(deliveredFor(atAnswer.delivered, newsletter.id))

    // What was in flight left before the answer and is counted; the rest never goes.
    const rows = await ledger(newsletter.id, subscribers)
    const mine = deliveredTo(after.delivered, newsletter.id, subscribers)
    for (const subscriber of subscribers.slice(0, 100)) {
      expect(rows.get(subscriber.id)?.status).toBe('sent')
      expect(mine.get(subscriber.email)?.length).toBe(1)
    }
    for (const subscriber of subscribers.slice(100)) {
      expect(rows.get(subscriber.id)?.status).toBe('queued')
      expect(mine.has(subscriber.email)).toBe(false)
    }
    const row = await newsletterRow(newsletter.id)
    expect(row).toMatchObject({ status: 'cancelled', sent: 100, failed: 0 })
    expect(view.sent).toBe(100)

    // A finished send cannot be cancelled again.
    const again = await api('DELETE', `/posts/${post.id}/newsletter`, undefined, admin.token)
    expect(again.status).toBe(409)
  })

  it('deleting the post cancels its send the same way, and the send goes with the post', async () => {
    const { admin, post, subscribers, newsletter, batches, provider } = await sendInProgress(150)
    const { sender, inFlight } = await holdFirstBatch(provider, newsletter.id, batches)
    const deletion = await answerAfterCancel(provider, newsletter.id, () =>
      api('DELETE', `/posts/${post.id}`, undefined, admin.token),
    )
    expect(deletion.status).toBe(204)
    const atAnswer = await provider.state()
    await inFlight
    expect(await env.DB.prepare('SELECT id FROM newsletters WHERE id = ?').bind(newsletter.id).first()).toBeNull()
    for (const batch of batches) expect(await sender.deliver(batch)).toEqual({ done: true })
    const after = await provider.state()
    expect(requestsFor(after.requests, newsletter.id)).toEqual(requestsFor(atAnswer.requests, newsletter.id))
    expect(deliveredTo(after.delivered, newsletter.id, subscribers.slice(100)).size).toBe(0)
  })

  it('a batch that arrives during a cancel that fails is not dropped: the send goes on', async () => {
    const { newsletter, subscribers, batches, provider } = await sendInProgress(150)
    const stub = senderOf(workerEnv, newsletter.id)
    const held = gate()
    const reached = gate()
    const batch = batches[0]!
    const result = await runInDurableObject(stub, async (object) => {
      const instance = object as unknown as NewsletterSender
      // This object's D1: the cancel's UPDATE is held, then lost.
      const own = instance as unknown as { env: WorkerEnv }
      own.env = {
        ...own.env,
        DB: faultyD1(own.env.DB, [
          {
            matches: /^update "newsletters" set "status" = \?, "completed_at" = \?.* returning/,
            gate: held.promise,
            onMatch: reached.open,
          },
        ]),
      }
      const cancelling = instance.cancel(newsletter.id)
      cancelling.catch(() => undefined)
      await reached.promise
      const delivering = instance.deliver(batch)
      held.open()
      expect(d1Lost(await cancelling.catch((err) => err))).toBe(true)
      return delivering
    })
    expect(result).toEqual({ done: true })
    expect((await newsletterRow(newsletter.id)).status).toBe('sending')
    const rows = await ledger(newsletter.id, subscribers.slice(0, 100))
    for (const entry of rows.values()) expect(entry.status).toBe('sent')
    expect(deliveredTo((await provider.state()).delivered, newsletter.id, subscribers).size).toBe(100)
  })
})
