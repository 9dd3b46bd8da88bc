import { env } from 'cloudflare:workers'
import { expect, vi } from 'vitest'
import { getConfig } from '../../src/config'
import type { Env } from '../../src/config'
import { createDb } from '../../src/db/client'
import type { Db } from '../../src/db/client'
import { insertNewsletter } from '../../src/db/newsletters'
import type { NewsletterRow } from '../../src/db/schema'
import { consoleTransport, httpTransport } from '../../src/email/transports'
import type { MailTransport } from '../../src/email/transports'
import { derivedHmacKey, sha256Base64Url } from '../../src/lib/hmac'
import type { MailQueueMessage, NewsletterBatch } from '../../src/lib/mail-queue-messages'
import { unsubscribeTokenFor } from '../../src/lib/unsubscribe-tokens'
import type { DeliveryDeps } from '../../src/newsletters/deliver'
import { oneAtATime } from '../../src/lib/one-at-a-time'
import { groupedLedger } from '../../src/newsletters/ledger'
import { continueSnapshot, startSend } from '../../src/newsletters/start'
import type { StartDeps } from '../../src/newsletters/start'
import worker from '../../src/index'
import { BASE_URL, api, registerAdmin, uniqueName } from '../helpers'
import type { RegisteredUser, TokenPair } from '../helpers'
import { MAIL_PROVIDER_API_KEY, mailScenario } from '../mail-provider'
import type { DeliveredEmail, MailScenario } from '../mail-provider'

// What the newsletter tests share. The test D1 is shared with every other test file, which create
// subscribers too: a send snapshots all active subscribers, so a test looks at the subscribers it
// created (by id, in the ledger; by address, at the fake provider) and checks totals as invariants.

/** The bindings the tests hand the worker: the pool's env, typed as the worker's code sees it. */
export type WorkerEnv = typeof env & Env

/** The test env as the worker's code types it (NEWSLETTER_SENDER, MAIL_QUEUE are bound by wrangler.toml). */
export const workerEnv = env as unknown as Env

export const db: Db = createDb(env)
export const config = getConfig(env)

export function unsubscribeKey(): Promise<CryptoKey> {
  return derivedHmacKey(config.tokens.secret, 'unsubscribe')
}

export async function unsubscribeToken(email: string): Promise<string> {
  return unsubscribeTokenFor(email, await unsubscribeKey())
}

// --- subscribers ---

export type SubscriberStatus = 'pending' | 'active' | 'unsubscribed' | 'bounced' | 'complained'

export interface TestSubscriber {
  id: number
  email: string
}

const created: number[] = []

/** Subscribers inserted directly (fast), with the unsubscribe-token hash the API would store. */
export async function insertSubscribers(count: number, status: SubscriberStatus = 'active'): Promise<TestSubscriber[]> {
  const tag = uniqueName('nl').toLowerCase()
  const now = Date.now()
  const key = await unsubscribeKey()
  const rows = await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const email = `${tag}-${status}-${i}@example.com`
      return { email, hash: await sha256Base64Url(await unsubscribeTokenFor(email, key)) }
    }),
  )
  const statements = rows.map((row) =>
    env.DB.prepare(
      `INSERT INTO subscribers (email, name, status, created_at, updated_at, confirmed_at, unsubscribed_at, unsubscribe_token_hash)
       VALUES (?, NULL, ?, ?, ?, ?, NULL, ?) RETURNING id`,
    ).bind(row.email, status, now, now, status === 'pending' ? null : now, row.hash),
  )
  const results = await env.DB.batch<{ id: number }>(statements)
  const subscribers = results.map((result, i) => ({ id: result.results[0]!.id, email: rows[i]!.email }))
  created.push(...subscribers.map((subscriber) => subscriber.id))
  return subscribers
}

export async function setSubscriberStatus(subscribers: TestSubscriber[], status: SubscriberStatus): Promise<void> {
  await env.DB.batch(
    subscribers.map((subscriber) =>
      env.DB.prepare('UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?').bind(
        status,
        Date.now(),
        subscriber.id,
      ),
    ),
  )
}

/**
 * Deletes the subscribers this file created, so that the shared list stays short for every later
 * send (each snapshots all active subscribers).
 */
export async function deleteCreatedSubscribers(): Promise<void> {
  const ids = created.splice(0)
  for (let i = 0; i < ids.length; i += 90) {
    const chunk = ids.slice(i, i + 90)
    await env.DB.prepare(`DELETE FROM subscribers WHERE id IN (${chunk.map(() => '?').join(',')})`)
      .bind(...chunk)
      .run()
  }
}

// --- posts and newsletters ---

export interface TestPost {
  id: number
  title: string
  body: string
  url: string
  published_at: string | null
  status: string
}

export interface Admin {
  user: RegisteredUser
  tokens: TokenPair
  token: string
}

export async function newAdmin(): Promise<Admin> {
  const { user, tokens } = await registerAdmin()
  return { user, tokens, token: tokens.access_token }
}

/** A post by the admin: published now unless `publication` says otherwise. */
export async function createPost(
  admin: Admin,
  publication: { status?: 'draft' | 'scheduled' | 'published'; published_at?: string } = {},
): Promise<TestPost> {
  const title = `Issue ${uniqueName('post')}`
  const body = `The body of ${title}.\nA second line.`
  const res = await api('POST', '/posts', { title, body, ...publication }, admin.token)
  expect(res.status, await res.clone().text()).toBe(201)
  return (await res.json()) as TestPost
}

export interface NewsletterView {
  post_id: number
  status: string
  recipients: number | null
  sent: number
  failed: number
  skipped: number
  created_at: string
  scheduled_for: string | null
  started_at: string | null
  completed_at: string | null
}

/**
 * A newsletter row that only the test drives: inserted as the API does, but with no start message
 * on the queue (the test hands its messages on itself).
 */
export async function newsletterOf(admin: Admin, post: TestPost, scheduledFor: Date | null = null) {
  return insertNewsletter(
    db,
    { postId: post.id, scheduledFor, createdBy: admin.user.id, apiOrigin: BASE_URL },
    new Date(),
  )
}

export async function newsletterRow(id: number): Promise<NewsletterRow> {
  const row = await db.query.newsletters.findFirst({ where: (table, { eq }) => eq(table.id, id) })
  if (row === undefined) throw new Error(`no newsletter ${id}`)
  return row
}

export async function newsletterIdOfPost(postId: number): Promise<number> {
  const row = await env.DB.prepare('SELECT id FROM newsletters WHERE post_id = ?').bind(postId).first<{ id: number }>()
  if (row === null) throw new Error(`post ${postId} has no newsletter`)
  return row.id
}

export interface LedgerRow {
  subscriber_id: number
  email: string
  batch_no: number
  status: string
  error: string | null
}

/** The ledger rows of a newsletter, by subscriber id (all of them, or only those of `subscribers`). */
export async function ledger(newsletterId: number, subscribers?: TestSubscriber[]): Promise<Map<number, LedgerRow>> {
  const { results } = await env.DB.prepare(
    'SELECT subscriber_id, email, batch_no, status, error FROM newsletter_deliveries WHERE newsletter_id = ?',
  )
    .bind(newsletterId)
    .all<LedgerRow>()
  const wanted = subscribers === undefined ? undefined : new Set(subscribers.map((subscriber) => subscriber.id))
  return new Map(
    results
      .filter((row) => wanted === undefined || wanted.has(row.subscriber_id))
      .map((row) => [row.subscriber_id, row]),
  )
}

/** sent + failed + skipped = recipients, and the counters are the ledger's. */
export async function expectCountersMatchLedger(newsletterId: number): Promise<NewsletterRow> {
  const row = await newsletterRow(newsletterId)
  const { results } = await env.DB.prepare(
    'SELECT status, count(*) AS n FROM newsletter_deliveries WHERE newsletter_id = ? GROUP BY status',
  )
    .bind(newsletterId)
    .all<{ status: string; n: number }>()
  const byStatus = Object.fromEntries(results.map((result) => [result.status, result.n]))
  expect({ sent: row.sent, failed: row.failed, skipped: row.skipped }).toEqual({
    sent: byStatus.sent ?? 0,
    failed: byStatus.failed ?? 0,
    skipped: byStatus.skipped ?? 0,
  })
  expect(row.recipients).toBe(results.reduce((total, result) => total + result.n, 0))
  if (row.status === 'sent') expect(row.sent + row.failed + row.skipped).toBe(row.recipients)
  return row
}

// --- the queue ---

export interface QueuedMessage {
  body: MailQueueMessage
  delaySeconds: number | undefined
}

/** A queue that records what it is given (the test delivers it, drops it or delivers it twice). */
export class RecordingQueue implements Queue<MailQueueMessage> {
  readonly messages: QueuedMessage[] = []

  async metrics(): Promise<QueueMetrics> {
    return { backlogCount: this.messages.length, backlogBytes: 0 }
  }

  async send(body: MailQueueMessage, options?: QueueSendOptions): Promise<QueueSendResponse> {
    this.messages.push({ body: structuredClone(body), delaySeconds: options?.delaySeconds })
    return { metadata: { metrics: { backlogCount: this.messages.length, backlogBytes: 0 } } }
  }

  async sendBatch(
    messages: Iterable<MessageSendRequest<MailQueueMessage>>,
    options?: QueueSendBatchOptions,
  ): Promise<QueueSendBatchResponse> {
    for (const message of messages) {
      this.messages.push({
        body: structuredClone(message.body),
        delaySeconds: message.delaySeconds ?? options?.delaySeconds,
      })
    }
    return { metadata: { metrics: { backlogCount: this.messages.length, backlogBytes: 0 } } }
  }

  /** Takes every message recorded so far. */
  take(): QueuedMessage[] {
    return this.messages.splice(0)
  }
}

export function startDeps(queue: Queue<MailQueueMessage>, database: Db = db): StartDeps {
  return { db: database, config, queue }
}

/**
 * Starts a send and takes its whole snapshot with a recording queue: the batch messages, in the
 * order they were queued.
 */
export async function snapshotBatches(newsletterId: number, now = new Date(), database: Db = db) {
  const queue = new RecordingQueue()
  const deps = startDeps(queue, database)
  await startSend(deps, newsletterId, now)
  const batches: NewsletterBatch[] = []
  for (let round = 0; round < 100; round++) {
    const messages = queue.take()
    if (messages.length === 0) break
    for (const { body } of messages) {
      if (body.kind === 'newsletter-batch') batches.push(body)
      else if (body.kind === 'newsletter-snapshot') await continueSnapshot(deps, newsletterId, now)
      else throw new Error(`unexpected ${body.kind}`)
    }
  }
  return batches
}

/** A message as the queue hands it to the consumer (createMessageBatch's input). */
export interface IncomingMessage {
  id: string
  timestamp: Date
  attempts: number
  body: MailQueueMessage
}

/**
 * Hands messages to the worker's queue handler as the queue `queueName` would (attempt
 * `attempts`), and answers what became of each: acknowledged, or retried after some seconds.
 * (A batch of its own: getQueueResult of this pool does not report a retry's delaySeconds.)
 */
export async function consume(
  bodies: MailQueueMessage[],
  options: { queueName?: string; env?: WorkerEnv; attempts?: number } = {},
): Promise<{ messages: IncomingMessage[]; acked: Set<string>; retried: Map<string, number | undefined> }> {
  const acked = new Set<string>()
  const retried = new Map<string, number | undefined>()
  const messages = bodies.map((body) => {
    const id = crypto.randomUUID()
    return {
      id,
      timestamp: new Date(),
      attempts: options.attempts ?? 1,
      body,
      ack: () => acked.add(id),
      retry: (retry?: QueueRetryOptions) => retried.set(id, retry?.delaySeconds),
    }
  })
  const batch = {
    queue: options.queueName ?? 'edgepress-mail',
    messages,
    ackAll: () => {
      for (const message of messages) message.ack()
    },
    retryAll: (retry?: QueueRetryOptions) => {
      for (const message of messages) message.retry(retry)
    },
  }
  await worker.queue(batch as unknown as MessageBatch<MailQueueMessage>, (options.env ?? env) as Env)
  return { messages, acked, retried }
}

// --- the provider ---

export function httpTransportTo(scenario: MailScenario): MailTransport {
  return httpTransport({ single: scenario.singleUrl, batch: scenario.batchUrl }, MAIL_PROVIDER_API_KEY)
}

/** DeliveryDeps as src/newsletters/deps.ts makes them, with the HTTP transport at the fake. */
export async function httpDeps(scenario: MailScenario, database: Db = db): Promise<DeliveryDeps> {
  return {
    ledger: groupedLedger(database),
    config,
    transport: httpTransportTo(scenario),
    unsubscribeKey: await unsubscribeKey(),
    renderInTurn: oneAtATime(),
  }
}

export function newScenario(): MailScenario {
  return mailScenario(uniqueName('mail').replaceAll('_', '-'))
}

/**
 * Newsletter batches (and, with `outboxTo`, the outbox's single sends to those addresses) that
 * the worker hands to the default console transport go to the fake provider instead, through the
 * real HTTP transport. The NewsletterSender runs in this isolate and shares its modules, so this
 * reaches the worker's own queue consumer and Durable Object. Undone by vi.restoreAllMocks().
 */
export function routeConsoleMailTo(scenario: MailScenario, outboxTo: string[] = []): void {
  const transport = httpTransportTo(scenario)
  const sendBatch = consoleTransport.sendBatch.bind(consoleTransport)
  const send = consoleTransport.send.bind(consoleTransport)
  vi.spyOn(consoleTransport, 'sendBatch').mockImplementation((emails, options) =>
    options.idempotencyKey.startsWith('edgepress-newsletter-')
      ? transport.sendBatch(emails, options)
      : sendBatch(emails, options),
  )
  const outbox = new Set(outboxTo.map((address) => address.toLowerCase()))
  vi.spyOn(consoleTransport, 'send').mockImplementation((email, options) =>
    outbox.has(email.to.toLowerCase()) ? transport.send(email, options) : send(email, options),
  )
}

/**
 * The emails of one newsletter (by its batches' keys) the fake accepted for these addresses, by
 * address. Another send may be under way meanwhile (the cron starts any due one) and mail them too.
 */
export function deliveredTo(
  delivered: DeliveredEmail[],
  newsletterId: number,
  subscribers: TestSubscriber[],
): Map<string, DeliveredEmail[]> {
  const wanted = new Set(subscribers.map((subscriber) => subscriber.email))
  const byAddress = new Map<string, DeliveredEmail[]>()
  for (const email of deliveredFor(delivered, newsletterId)) {
    if (!wanted.has(email.to)) continue
    byAddress.set(email.to, [...(byAddress.get(email.to) ?? []), email])
  }
  return byAddress
}

/** The newsletter's emails the fake accepted (by the idempotency keys of its batches). */
export function deliveredFor(delivered: DeliveredEmail[], newsletterId: number): DeliveredEmail[] {
  return delivered.filter((email) => email.idempotencyKey.startsWith(`edgepress-newsletter-${newsletterId}-`))
}

// --- waiting ---

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `read` until `done` holds, for up to about `timeoutMs` (counted in polls, not read from
 * the clock, which a test may have faked). Never a bound on how fast something must happen.
 */
export async function eventually<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<T> {
  const interval = 50
  let value = await read()
  for (let polls = 0; !done(value); polls++) {
    if (polls * interval > timeoutMs) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`)
    await sleep(interval)
    value = await read()
  }
  return value
}

export const TERMINAL = ['sent', 'cancelled', 'failed']

// --- D1 faults ---

/** What D1 throws when the network to it is gone. */
export const d1Outage = () => new Error('D1_ERROR: Network connection lost.')

export interface D1Fault {
  /** A statement run alone, or a batch with a statement, whose SQL matches fails. */
  matches: RegExp
  /** How many times (default 1). */
  times?: number
  /** The statement (or batch) runs and commits first; only its answer is lost. */
  after?: boolean
  /** Waited for before failing (a test holds the statement in flight). */
  gate?: Promise<void>
  /** Called when a matching statement arrives. */
  onMatch?: () => void
}

/** A D1 binding whose matching statements fail as the faults say (each fault is used up). */
export function faultyD1(real: D1Database, faults: D1Fault[]): D1Database {
  const left = faults.map((fault) => fault.times ?? 1)
  const sqlOf = new WeakMap<object, string>()
  const originals = new WeakMap<object, D1PreparedStatement>()
  const take = (sqls: string[]): D1Fault | undefined => {
    const index = faults.findIndex((fault, i) => left[i]! > 0 && sqls.some((sql) => fault.matches.test(sql)))
    if (index === -1) return undefined
    left[index]! -= 1
    faults[index]!.onMatch?.()
    return faults[index]
  }
  const run = async <T>(sqls: string[], real: () => Promise<T>): Promise<T> => {
    const fault = take(sqls)
    if (fault === undefined) return real()
    if (fault.after === true) await real()
    await fault.gate
    throw d1Outage()
  }
  const wrap = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrap(target.bind(...args), sql)
        if (typeof property === 'string' && ['run', 'all', 'first', 'raw'].includes(property)) {
          return (...args: unknown[]) =>
            run([sql], () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args))
        }
        return (value as (...a: unknown[]) => unknown).bind(target)
      },
    })
    sqlOf.set(proxy, sql)
    originals.set(proxy, statement)
    return proxy
  }
  return new Proxy(real, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (property === 'prepare') return (sql: string) => wrap(target.prepare(sql), sql)
      if (property === 'batch') {
        return (statements: D1PreparedStatement[]) =>
          run(
            statements.map((statement) => sqlOf.get(statement) ?? ''),
            () => target.batch(statements.map((statement) => originals.get(statement) ?? statement)),
          )
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

/** A promise the test resolves when it chooses. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}
