// `npm run bench:newsletter`: a newsletter to N active subscribers (default 10 000) on the built
// Worker served by Miniflare (scripts/bench/serve.ts) with its real mail queue, queue consumer and
// NewsletterSender, against a local HTTP sink that answers like a provider's batch endpoint. It
// prints messages per second end to end, and the same sink fed directly by a plain loop with the
// same batch size and concurrency: the ceiling on this machine.
//
//   --subscribers N   active subscribers to mail (default 10 000)
//   --strict          exit 1 when a target is missed (default: report only)
//
// Targets (docs/benchmarks.md): end to end ≥ 0.5× the ceiling, and all N in under a minute.
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { login, registerUser } from './fixtures'
import { readWranglerConfig } from '../wrangler'
import { positiveNumber } from './flags'
import { printTable, writeResults } from './report'
import { expectJson, log, serveWorker } from './serve'

// What the queue consumer does at once: max_batch_size messages (wrangler.toml) of up to 100
// recipients each, sent concurrently; the ceiling loop uses the same.
const MESSAGES_PER_REQUEST = 100
const CONCURRENT_REQUESTS = mailConsumerBatchSize()

/** The ceiling is the median of this many loops: one loop varies by ±40 % on a busy machine. */
const CEILING_LOOPS = 5

function mailConsumerBatchSize(): number {
  const consumer = readWranglerConfig().queues.consumers?.find((entry) => entry.queue === 'edgepress-mail')
  if (consumer?.max_batch_size === undefined) throw new Error('wrangler.toml: edgepress-mail has no max_batch_size')
  return consumer.max_batch_size
}

const { values } = parseArgs({
  options: { subscribers: { type: 'string' }, strict: { type: 'boolean', default: false } },
})
const subscriberCount = positiveNumber('bench:newsletter', {
  name: '--subscribers',
  raw: values.subscribers,
  fallback: 10_000,
})

/** The provider's batch endpoint: counts accepted messages, once per Idempotency-Key. */
interface Sink {
  url: string
  accepted: number
  requests: number
  duplicates: number
  firstAcceptedAt: number
  lastAcceptedAt: number
  reset: () => void
  close: () => Promise<void>
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

async function startSink(): Promise<Sink> {
  const keys = new Set<string>()
  const sink: Sink = {
    url: '',
    accepted: 0,
    requests: 0,
    duplicates: 0,
    firstAcceptedAt: 0,
    lastAcceptedAt: 0,
    reset() {
      keys.clear()
      Object.assign(sink, { accepted: 0, requests: 0, duplicates: 0, firstAcceptedAt: 0, lastAcceptedAt: 0 })
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  }
  const server: Server = createServer(async (request, response) => {
    const body = await readBody(request)
    sink.requests++
    const messages = JSON.parse(body) as unknown
    const key = String(request.headers['idempotency-key'] ?? '')
    if (keys.has(key)) sink.duplicates++
    else {
      keys.add(key)
      sink.accepted += Array.isArray(messages) ? messages.length : 1
      sink.lastAcceptedAt = performance.now()
      if (sink.firstAcceptedAt === 0) sink.firstAcceptedAt = sink.lastAcceptedAt
    }
    const count = Array.isArray(messages) ? messages.length : 1
    response.writeHead(200, { 'content-type': 'application/json' })
    response.end(JSON.stringify({ data: Array.from({ length: count }, (_, i) => ({ id: `${key}-${i}` })) }))
  })
  server.keepAliveTimeout = 30_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  sink.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return sink
}

/** N active subscribers, straight into D1 (one INSERT … SELECT over a counter). */
async function insertSubscribers(db: D1Database, count: number): Promise<void> {
  const now = Date.now()
  await db
    .prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
       INSERT INTO subscribers (email, name, status, created_at, updated_at, confirmed_at, unsubscribe_token_hash)
       SELECT 'reader' || i || '@example.com', NULL, 'active', ?2, ?2, ?2, 'bench-' || i FROM n`,
    )
    .bind(count, now)
    .run()
}

/** The ceiling: the median of several loops (each reported). */
async function ceiling(sink: Sink, count: number, message: unknown): Promise<number> {
  const loops: number[] = []
  for (let loop = 0; loop < CEILING_LOOPS; loop++) loops.push(await ceilingLoop(sink, count, message))
  log(`ceiling loops (messages/s): ${loops.map((rate) => rate.toFixed(0)).join(', ')}`)
  return loops.sort((a, b) => a - b)[Math.floor(loops.length / 2)] as number
}

/** One loop: the same number of messages, straight from Node to the sink, as the consumer batches them. */
async function ceilingLoop(sink: Sink, count: number, message: unknown): Promise<number> {
  sink.reset()
  const batches = Math.ceil(count / MESSAGES_PER_REQUEST)
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: CONCURRENT_REQUESTS }, async () => {
      for (let batch = next++; batch < batches; batch = next++) {
        const size = Math.min(MESSAGES_PER_REQUEST, count - batch * MESSAGES_PER_REQUEST)
        const response = await fetch(`${sink.url}/emails/batch`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': `ceiling-${batch}` },
          body: JSON.stringify(Array.from({ length: size }, () => message)),
        })
        await response.arrayBuffer()
      }
    }),
  )
  return count / ((performance.now() - started) / 1000)
}

interface NewsletterView {
  status: string
  recipients: number | null
  sent: number
  failed: number
  skipped: number
}

const POST_BODY = 'A post of a few paragraphs. '.repeat(60)

/** An administrator's token and a published post by them, with N active subscribers to mail it to. */
async function prepare(base: string, db: D1Database): Promise<{ token: string; postId: number }> {
  const { credentials, userId } = await registerUser(base, db, 'benchadmin')
  await db.prepare('UPDATE users SET is_admin = 1, email_verified = 1 WHERE id = ?').bind(userId).run()
  const { access_token: token } = await login(base, credentials)
  const post = await db
    .prepare(
      `INSERT INTO posts (author_id, title, body, slug, published_at, created_at, updated_at)
       VALUES (?1, 'The benchmark issue', ?2, 'the-benchmark-issue', ?3, ?3, ?3) RETURNING id`,
    )
    .bind(userId, POST_BODY, Date.now())
    .first<{ id: number }>()
  if (post === null) throw new Error('no post')
  log(`inserting ${subscriberCount} active subscribers`)
  await insertSubscribers(db, subscriberCount)
  return { token, postId: post.id }
}

interface SendRun {
  view: NewsletterView
  /** From the POST to the last message accepted by the sink. */
  seconds: number
  accepted: number
  duplicates: number
  requests: number
}

/** POSTs the newsletter and polls it until the send is over; what reached the sink. */
async function send(base: string, sink: Sink, { token, postId }: { token: string; postId: number }): Promise<SendRun> {
  const auth = { authorization: `Bearer ${token}` }
  const url = `${base}/api/v1/posts/${postId}/newsletter`
  const started = performance.now()
  let view = await expectJson<NewsletterView>(await fetch(url, { method: 'POST', headers: auth }), 'POST', 202)
  log(`newsletter ${view.status}; waiting for ${subscriberCount} deliveries`)
  while (view.status === 'sending' || view.status === 'scheduled') {
    if (performance.now() > started + 300_000) throw new Error(`not finished after 300 s: ${JSON.stringify(view)}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
    view = await expectJson<NewsletterView>(await fetch(url, { headers: auth }), 'GET newsletter')
  }
  const seconds = (sink.lastAcceptedAt - started) / 1000
  log(`send ${view.status}: ${JSON.stringify(view)}; sink accepted ${sink.accepted} in ${sink.requests} requests`)
  log(
    `first message at the sink ${((sink.firstAcceptedAt - started) / 1000).toFixed(2)} s after the POST, ` +
      `last ${seconds.toFixed(2)} s`,
  )
  return { view, seconds, accepted: sink.accepted, duplicates: sink.duplicates, requests: sink.requests }
}

function report(run: SendRun, ceilingPerSecond: number): void {
  const endToEnd = run.accepted / run.seconds
  const ratio = endToEnd / ceilingPerSecond
  const targets = [
    { name: 'end to end ÷ ceiling', value: ratio.toFixed(2), target: '≥ 0.50', pass: ratio >= 0.5 },
    {
      name: `all ${subscriberCount} delivered (s)`,
      value: run.seconds.toFixed(1),
      target: '< 60',
      pass: run.seconds < 60,
    },
    {
      name: 'each subscriber mailed once',
      value: `${run.accepted} accepted, ${run.duplicates} repeats`,
      target: `${subscriberCount}, 0`,
      pass:
        run.accepted === subscriberCount &&
        run.duplicates === 0 &&
        run.view.status === 'sent' &&
        run.view.sent === subscriberCount,
    },
  ]
  printTable(
    ['measure', 'messages/s'],
    [
      ['end to end (POST → last message at the sink)', endToEnd.toFixed(0)],
      [
        `ceiling (median of ${CEILING_LOOPS} plain loops, ${MESSAGES_PER_REQUEST}/request, ${CONCURRENT_REQUESTS} concurrent)`,
        ceilingPerSecond.toFixed(0),
      ],
    ],
  )
  printTable(
    ['target', 'value', 'wanted', 'pass'],
    targets.map((t) => [t.name, t.value, t.target, t.pass ? 'yes' : 'NO']),
  )
  writeResults('newsletter-', new Date().toISOString(), {
    subscribers: subscriberCount,
    seconds: run.seconds,
    endToEndPerSecond: endToEnd,
    ceilingPerSecond,
    requests: run.requests,
    newsletter: run.view,
    targets,
  })
  if (values.strict && targets.some((t) => !t.pass)) process.exitCode = 1
}

async function main(): Promise<void> {
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-bench-newsletter-'))
  const sink = await startSink()
  const served = await serveWorker({
    workDir,
    vars: {
      MAIL_TRANSPORT: 'http',
      MAIL_API_KEY: 'bench-key',
      MAIL_API_URL: `${sink.url}/emails`,
      MAIL_API_BATCH_URL: `${sink.url}/emails/batch`,
    },
  })
  try {
    const prepared = await prepare(served.base, served.db)
    // The registration's verification email went to the sink too; only the newsletter counts.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    sink.reset()
    const run = await send(served.base, sink, prepared)
    const sample = {
      from: 'edgepress <no-reply@edgepress.local>',
      to: ['reader1@example.com'],
      subject: 'The benchmark issue',
      text: `The benchmark issue\n\n${POST_BODY}`,
      headers: { 'List-Unsubscribe': `<${served.base}/api/v1/subscribers/unsubscribe?token=${'x'.repeat(22)}>` },
    }
    report(run, await ceiling(sink, subscriberCount, sample))
  } finally {
    await served.dispose()
    await sink.close()
    rmSync(workDir, { recursive: true, force: true })
  }
}

await main()
