import { createExecutionContext, createScheduledController, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import worker from '../../src/index'
import { listId, newsletterEmail } from '../../src/newsletters/content'
import { BASE_URL, api, expectProblem, fetchWorker, outboxMessagesTo, registerAndLogin } from '../helpers'
import type { MailScenario } from '../mail-provider'
import {
  RecordingQueue,
  TERMINAL,
  config,
  consume,
  createPost,
  deleteCreatedSubscribers,
  deliveredTo,
  eventually,
  expectCountersMatchLedger,
  insertSubscribers,
  ledger,
  newAdmin,
  newScenario,
  newsletterIdOfPost,
  newsletterOf,
  newsletterRow,
  routeConsoleMailTo,
  unsubscribeToken,
  workerEnv,
} from './support'
import type { Admin, NewsletterView, TestPost, WorkerEnv } from './support'

// The newsletter routes, end to end: the request, then the worker's own queue, consumer and
// NewsletterSender in this runtime, with the default console transport's batches routed to the
// fake provider (test/mail-provider.ts) so that a test can read what each subscriber received.
// Waiting is polling a state with a generous bound, never a bet on how fast it gets there.

const scenarios: MailScenario[] = []

function scenario(): MailScenario {
  const created = newScenario()
  scenarios.push(created)
  return created
}

afterEach(async () => {
  vi.useRealTimers()
  vi.restoreAllMocks()
  for (const created of scenarios.splice(0)) await created.clear()
})

afterAll(deleteCreatedSubscribers)

const HOUR = 3_600_000
const MINUTE = 60_000

const newsletterPath = (post: { id: number }) => `/posts/${post.id}/newsletter`

async function getNewsletter(admin: Admin, post: TestPost): Promise<NewsletterView> {
  const res = await api('GET', newsletterPath(post), undefined, admin.token)
  expect(res.status, await res.clone().text()).toBe(200)
  return (await res.json()) as NewsletterView
}

/** Polls GET …/newsletter until the send is over (sent, cancelled or failed). */
function finished(admin: Admin, post: TestPost): Promise<NewsletterView> {
  return eventually(
    () => getNewsletter(admin, post),
    (view) => TERMINAL.includes(view.status),
    'the send to finish',
  )
}

async function postNewsletter(admin: Admin, post: TestPost): Promise<NewsletterView> {
  const res = await api('POST', newsletterPath(post), undefined, admin.token)
  expect(res.status, await res.clone().text()).toBe(202)
  return (await res.json()) as NewsletterView
}

async function runCron(scheduledTime: Date, workerEnv: WorkerEnv = env): Promise<void> {
  const controller = createScheduledController({ scheduledTime, cron: '*/5 * * * *' })
  const ctx = createExecutionContext()
  worker.scheduled(controller, workerEnv as never, ctx)
  await waitOnExecutionContext(ctx)
}

describe('who may send', () => {
  it('anonymous callers get 401 and non-administrators 403, and nothing is created', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const { tokens } = await registerAndLogin()
    const calls: [string, string][] = [
      ['POST', newsletterPath(post)],
      ['POST', `${newsletterPath(post)}?dry_run=true`],
      ['GET', newsletterPath(post)],
      ['DELETE', newsletterPath(post)],
      ['POST', `${newsletterPath(post)}/test`],
    ]
    for (const [method, path] of calls) {
      await expectProblem(await api(method, path), 401, 'not_authenticated')
      await expectProblem(await api(method, path, undefined, tokens.access_token), 403, 'forbidden')
    }
    await expectProblem(await api('GET', newsletterPath(post), undefined, admin.token), 404, 'not_found')
  })
})

describe('POST /posts/{id}/newsletter', () => {
  it('a missing post is 404; a post without a send has none to GET or DELETE', async () => {
    const admin = await newAdmin()
    await expectProblem(await api('POST', '/posts/999999999/newsletter', undefined, admin.token), 404, 'not_found')
    await expectProblem(await api('POST', '/posts/abc/newsletter', undefined, admin.token), 404, 'not_found')
    const post = await createPost(admin)
    await expectProblem(await api('GET', newsletterPath(post), undefined, admin.token), 404, 'not_found')
    await expectProblem(await api('DELETE', newsletterPath(post), undefined, admin.token), 404, 'not_found')
  })

  it('a draft is 409 post_not_published, also as a dry run', async () => {
    const admin = await newAdmin()
    const draft = await createPost(admin, { status: 'draft' })
    await expectProblem(await api('POST', newsletterPath(draft), undefined, admin.token), 409, 'post_not_published')
    const dryRun = await api('POST', `${newsletterPath(draft)}?dry_run=true`, undefined, admin.token)
    await expectProblem(dryRun, 409, 'post_not_published')
    await expectProblem(await api('GET', newsletterPath(draft), undefined, admin.token), 404, 'not_found')
  })

  it('?dry_run=true counts the active subscribers, stores and sends nothing', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const active = await insertSubscribers(3)
    await insertSubscribers(1, 'unsubscribed')
    await insertSubscribers(1, 'bounced')
    await insertSubscribers(1, 'complained')
    await insertSubscribers(1, 'pending')
    const provider = scenario()
    routeConsoleMailTo(provider)
    const countActive = async () =>
      (await env.DB.prepare("SELECT count(*) AS n FROM subscribers WHERE status = 'active'").first<{ n: number }>())!.n
    // Other tests add subscribers meanwhile: the count is checked when the list held still.
    let checked = false
    for (let attempt = 0; attempt < 10 && !checked; attempt++) {
      const before = await countActive()
      const res = await api('POST', `${newsletterPath(post)}?dry_run=true`, undefined, admin.token)
      expect(res.status).toBe(200)
      const view = (await res.json()) as NewsletterView
      expect(view).toMatchObject({ post_id: post.id, status: 'dry_run', sent: 0, failed: 0, skipped: 0 })
      expect(view.recipients).toBeGreaterThanOrEqual(active.length)
      if (before === (await countActive())) {
        expect(view.recipients).toBe(before)
        checked = true
      }
    }
    expect(checked).toBe(true)
    await expectProblem(await api('GET', newsletterPath(post), undefined, admin.token), 404, 'not_found')
    expect(await env.DB.prepare('SELECT id FROM newsletters WHERE post_id = ?').bind(post.id).first()).toBeNull()
    // A real send is still possible afterwards.
    await postNewsletter(admin, post)
    await finished(admin, post)
  })

  it('a published post goes out now: 202, then every active subscriber is mailed once and the counters add up', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const active = await insertSubscribers(5)
    const inactive = [
      ...(await insertSubscribers(1, 'unsubscribed')),
      ...(await insertSubscribers(1, 'bounced')),
      ...(await insertSubscribers(1, 'complained')),
      ...(await insertSubscribers(1, 'pending')),
    ]
    const provider = scenario()
    routeConsoleMailTo(provider)

    const accepted = await postNewsletter(admin, post)
    expect(accepted).toEqual({
      post_id: post.id,
      status: 'sending',
      recipients: null,
      sent: 0,
      failed: 0,
      skipped: 0,
      created_at: expect.any(String),
      scheduled_for: null,
      started_at: null,
      completed_at: null,
    })
    // One send per post, however often it is asked for.
    await expectProblem(await api('POST', newsletterPath(post), undefined, admin.token), 409, 'newsletter_exists')

    const done = await finished(admin, post)
    expect(done.status).toBe('sent')
    expect(done.recipients).toBeGreaterThanOrEqual(active.length)
    expect(done.sent + done.failed + done.skipped).toBe(done.recipients)
    expect(Date.parse(done.started_at!)).toBeGreaterThanOrEqual(Date.parse(done.created_at))
    expect(Date.parse(done.completed_at!)).toBeGreaterThanOrEqual(Date.parse(done.started_at!))
    const newsletterId = await newsletterIdOfPost(post.id)
    await expectCountersMatchLedger(newsletterId)
    const rows = await ledger(newsletterId)
    for (const subscriber of active) expect(rows.get(subscriber.id)?.status).toBe('sent')
    for (const subscriber of inactive) expect(rows.has(subscriber.id)).toBe(false)
    const state = await provider.state()
    const received = deliveredTo(state.delivered, newsletterId, [...active, ...inactive])
    for (const subscriber of active) expect(received.get(subscriber.email)?.length).toBe(1)
    for (const subscriber of inactive) expect(received.has(subscriber.email)).toBe(false)

    // A finished send cannot be cancelled, nor sent again.
    await expectProblem(await api('DELETE', newsletterPath(post), undefined, admin.token), 409, 'conflict')
    await expectProblem(await api('POST', newsletterPath(post), undefined, admin.token), 409, 'newsletter_exists')
  })

  it('a batch the provider rate-limits is retried by the queue after its Retry-After, under the same key', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const subscribers = await insertSubscribers(3)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await provider.setFaults([
      { recipient: subscribers[0]!.email, fault: { kind: 'status', status: 429, retryAfter: '1' } },
    ])
    await postNewsletter(admin, post)
    const done = await finished(admin, post)
    expect(done.status).toBe('sent')
    const state = await provider.state()
    const newsletterId = await newsletterIdOfPost(post.id)
    const tried = state.requests.filter(
      (request) =>
        request.idempotencyKey?.startsWith(`edgepress-newsletter-${newsletterId}-`) &&
        request.recipients.includes(subscribers[0]!.email),
    )
    expect(tried.map((request) => request.answer)).toEqual([429, 200])
    expect(new Set(tried.map((request) => request.idempotencyKey)).size).toBe(1)
    const received = deliveredTo(state.delivered, newsletterId, subscribers)
    for (const subscriber of subscribers) expect(received.get(subscriber.email)?.length).toBe(1)
  })

  it('each email: the post’s title, body and url, an unsubscribe link and one-click headers for its recipient', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const [first, second] = await insertSubscribers(2)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await postNewsletter(admin, post)
    expect((await finished(admin, post)).status).toBe('sent')

    const newsletterId = await newsletterIdOfPost(post.id)
    const received = deliveredTo((await provider.state()).delivered, newsletterId, [first!, second!])
    const email = received.get(first!.email)![0]!
    const token = encodeURIComponent(await unsubscribeToken(first!.email))
    expect(email.from).toBe(config.mail.from)
    expect(email.to).toBe(first!.email)
    expect(email.subject).toBe(post.title)
    expect(email.headers).toEqual({
      'List-Unsubscribe': `<${BASE_URL}/api/v1/subscribers/unsubscribe?token=${token}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      'List-Id': `${config.feedTitle} <newsletter.${new URL(config.publicBaseUrl).hostname}>`,
    })
    expect(email.headers['List-Unsubscribe']).toMatch(/^<https:\/\//)
    const lines = email.text.split('\n')
    expect(lines[0]).toBe(post.title)
    expect(email.text).toContain(post.body)
    expect(email.text).toContain(post.url)
    expect(email.text).toContain(`${config.publicBaseUrl}/unsubscribe?token=${token}`)
    // Per recipient: the other's links are the other's.
    const other = received.get(second!.email)![0]!
    expect(other.headers['List-Unsubscribe']).not.toBe(email.headers['List-Unsubscribe'])
    expect(other.text).not.toContain(token)

    // The link's token unsubscribes its recipient.
    const res = await api('POST', '/subscribers/unsubscribe', { token: decodeURIComponent(token) })
    expect(res.status).toBe(200)
    const status = await env.DB.prepare('SELECT status FROM subscribers WHERE id = ?').bind(first!.id).first()
    expect(status).toEqual({ status: 'unsubscribed' })
  })

  it('the List-Unsubscribe URL takes the one-click POST of RFC 8058 from the recipient’s mail client', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const [reader] = await insertSubscribers(1)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await postNewsletter(admin, post)
    expect((await finished(admin, post)).status).toBe('sent')
    const newsletterId = await newsletterIdOfPost(post.id)
    const email = deliveredTo((await provider.state()).delivered, newsletterId, [reader!]).get(reader!.email)![0]!
    const url = /^<(https:\/\/[^>]+)>$/.exec(email.headers['List-Unsubscribe']!)![1]!
    // What a mail client sends: the header's URL, the header's body, form-encoded; nothing else.
    const res = await fetchWorker(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: email.headers['List-Unsubscribe-Post'],
    })
    expect(res.status, await res.clone().text()).toBe(200)
    const status = await env.DB.prepare('SELECT status FROM subscribers WHERE id = ?').bind(reader!.id).first()
    expect(status).toEqual({ status: 'unsubscribed' })
  })

  it('what the post says is fixed when the send starts; a title cannot break the subject header', () => {
    const email = newsletterEmail(
      {
        subject: 'Line one\r\nBcc: someone@example.com',
        body: 'Body',
        postUrl: 'https://blog.example.com/posts/x',
        listName: 'My <"Blog">',
        publicBaseUrl: 'https://blog.example.com',
        apiOrigin: 'https://api.example.com',
        from: 'Blog <news@example.com>',
      },
      'reader@example.com',
      'tok/en+',
    )
    expect(email.subject).toBe('Line one Bcc: someone@example.com')
    expect(email.headers['List-Unsubscribe']).toBe(
      '<https://api.example.com/api/v1/subscribers/unsubscribe?token=tok%2Fen%2B>',
    )
    expect(email.text).toContain('https://blog.example.com/unsubscribe?token=tok%2Fen%2B')
    expect(listId({ listName: 'My <"Blog">', publicBaseUrl: 'https://blog.example.com' })).toBe(
      'My Blog <newsletter.blog.example.com>',
    )
  })
})

describe('a scheduled post', () => {
  it('is sent when it is published: scheduled_for follows published_at, and a draft cancels the send', async () => {
    const admin = await newAdmin()
    const at = new Date(Date.now() + HOUR)
    const post = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    const accepted = await postNewsletter(admin, post)
    expect(accepted).toMatchObject({
      status: 'scheduled',
      scheduled_for: at.toISOString(),
      recipients: null,
      sent: 0,
      failed: 0,
      skipped: 0,
      started_at: null,
    })

    const later = new Date(at.getTime() + HOUR)
    const moved = await api('PATCH', `/posts/${post.id}`, { published_at: later.toISOString() }, admin.token)
    expect(moved.status).toBe(200)
    expect(await getNewsletter(admin, post)).toMatchObject({ status: 'scheduled', scheduled_for: later.toISOString() })

    const draft = await api('PATCH', `/posts/${post.id}`, { status: 'draft' }, admin.token)
    expect(draft.status).toBe(200)
    const cancelled = await getNewsletter(admin, post)
    expect(cancelled).toMatchObject({ status: 'cancelled', recipients: null, sent: 0 })
    expect(cancelled.completed_at).not.toBeNull()
    await expectProblem(await api('DELETE', newsletterPath(post), undefined, admin.token), 409, 'conflict')
  })

  it('publishing it now starts its send', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin, {
      status: 'scheduled',
      published_at: new Date(Date.now() + HOUR).toISOString(),
    })
    const subscribers = await insertSubscribers(3)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await postNewsletter(admin, post)
    const published = await api('PATCH', `/posts/${post.id}`, { status: 'published' }, admin.token)
    expect(published.status).toBe(200)
    const done = await finished(admin, post)
    expect(done.status).toBe('sent')
    expect(Date.parse(done.started_at!)).toBeGreaterThanOrEqual(Date.parse(done.scheduled_for!))
    const newsletterId = await newsletterIdOfPost(post.id)
    const received = deliveredTo((await provider.state()).delivered, newsletterId, subscribers)
    for (const subscriber of subscribers) expect(received.get(subscriber.email)?.length).toBe(1)
  })

  it('its start message, early, waits for the post’s time; at the time, the send starts', async () => {
    const admin = await newAdmin()
    const at = new Date(Date.now() + HOUR)
    const post = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    const subscribers = await insertSubscribers(2)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await postNewsletter(admin, post)
    const newsletterId = await newsletterIdOfPost(post.id)
    const start = { kind: 'newsletter-start' as const, newsletterId }

    // The worker's clock (this runtime's) 30 s before the post's time.
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(at.getTime() - 30_000)
    const queue = new RecordingQueue()
    const early = await consume([start], { env: { ...env, MAIL_QUEUE: queue } })
    expect(early.acked.size).toBe(1)
    expect(await newsletterRow(newsletterId)).toMatchObject({ status: 'scheduled', startedAt: null })
    expect(queue.messages).toEqual([{ body: start, delaySeconds: 30 }])

    vi.setSystemTime(at)
    expect((await consume([start])).acked.size).toBe(1)
    vi.useRealTimers()
    const row = await newsletterRow(newsletterId)
    expect(row.startedAt).toEqual(at)
    expect(row.subject).toBe(post.title)
    const done = await finished(admin, post)
    expect(done).toMatchObject({ status: 'sent', started_at: at.toISOString(), scheduled_for: at.toISOString() })
    const received = deliveredTo((await provider.state()).delivered, newsletterId, subscribers)
    for (const subscriber of subscribers) expect(received.get(subscriber.email)?.length).toBe(1)
  })

  it('the cron hands the queue a start delayed to the post’s time once it is 15 minutes ahead, and the send goes out then', async () => {
    const admin = await newAdmin()
    const at = new Date(Date.now() + HOUR)
    const post = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    const subscribers = await insertSubscribers(2)
    const provider = scenario()
    routeConsoleMailTo(provider)
    await postNewsletter(admin, post)
    const newsletterId = await newsletterIdOfPost(post.id)
    const starts = (queue: RecordingQueue) =>
      queue.messages.filter(
        (message) => message.body.kind === 'newsletter-start' && message.body.newsletterId === newsletterId,
      )

    const queue = new RecordingQueue()
    const cronEnv = { ...env, MAIL_QUEUE: queue }
    await runCron(new Date(at.getTime() - 20 * MINUTE), cronEnv)
    expect(starts(queue)).toEqual([])
    await runCron(new Date(at.getTime() - 10 * MINUTE), cronEnv)
    expect(starts(queue)).toEqual([{ body: { kind: 'newsletter-start', newsletterId }, delaySeconds: 600 }])

    // At the post's time, on the worker's clock too: the cron's start goes through the real queue.
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(at)
    await runCron(at)
    await eventually(
      () => newsletterRow(newsletterId),
      (row) => row.startedAt !== null,
      'the send to start',
    )
    vi.useRealTimers()
    const done = await finished(admin, post)
    expect(done).toMatchObject({ status: 'sent', started_at: at.toISOString() })
    const received = deliveredTo((await provider.state()).delivered, newsletterId, subscribers)
    for (const subscriber of subscribers) expect(received.get(subscriber.email)?.length).toBe(1)
  })

  it('the cron hands on again a send whose start message was lost, and a snapshot that stalled', async () => {
    const admin = await newAdmin()
    // Stored, never handed to the queue (the request could not reach it).
    const lost = await newsletterOf(admin, await createPost(admin))
    // Started over 5 minutes ago, its snapshot unfinished (its message lost).
    const stalled = await newsletterOf(admin, await createPost(admin))
    await env.DB.prepare('UPDATE newsletters SET started_at = ? WHERE id = ?')
      .bind(Date.now() - 10 * MINUTE, stalled.id)
      .run()
    try {
      const queue = new RecordingQueue()
      await runCron(new Date(), { ...env, MAIL_QUEUE: queue })
      expect(queue.messages).toContainEqual({
        body: { kind: 'newsletter-start', newsletterId: lost.id },
        delaySeconds: 0,
      })
      expect(queue.messages).toContainEqual({
        body: { kind: 'newsletter-snapshot', newsletterId: stalled.id },
        delaySeconds: undefined,
      })
    } finally {
      // Not left for a later cron run to hand on.
      await env.DB.prepare("UPDATE newsletters SET status = 'cancelled' WHERE id IN (?, ?)")
        .bind(lost.id, stalled.id)
        .run()
    }
  })
})

describe('DELETE /posts/{id}/newsletter', () => {
  it('cancels a scheduled send: 200 cancelled, then 409; nothing is ever sent', async () => {
    const admin = await newAdmin()
    const at = new Date(Date.now() + HOUR)
    const post = await createPost(admin, { status: 'scheduled', published_at: at.toISOString() })
    await postNewsletter(admin, post)
    const res = await api('DELETE', newsletterPath(post), undefined, admin.token)
    expect(res.status).toBe(200)
    const view = (await res.json()) as NewsletterView
    expect(view).toMatchObject({ post_id: post.id, status: 'cancelled', recipients: null, sent: 0 })
    expect(view.completed_at).not.toBeNull()
    await expectProblem(await api('DELETE', newsletterPath(post), undefined, admin.token), 409, 'conflict')
    expect((await getNewsletter(admin, post)).status).toBe('cancelled')
    // Its start message, at its time, starts nothing.
    const newsletterId = await newsletterIdOfPost(post.id)
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(at)
    await consume([{ kind: 'newsletter-start', newsletterId }])
    vi.useRealTimers()
    expect(await newsletterRow(newsletterId)).toMatchObject({ status: 'cancelled', startedAt: null })
  })
})

describe('POST /posts/{id}/newsletter/test', () => {
  it('mails the post to the calling administrator’s verified address only, with the newsletter’s headers', async () => {
    const admin = await newAdmin()
    const post = await createPost(admin)
    const subscribers = await insertSubscribers(2)
    const unverified = await api('POST', `${newsletterPath(post)}/test`, undefined, admin.token)
    const problem = await expectProblem(unverified, 400, 'validation_failed')
    expect(problem.detail).toMatch(/verify/i)

    await env.DB.prepare('UPDATE users SET email_verified = 1 WHERE id = ?').bind(admin.user.id).run()
    const res = await api('POST', `${newsletterPath(post)}/test`, undefined, admin.token)
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ status: 'accepted' })

    const tests = (await outboxMessagesTo(admin.user.email)).filter(
      (message) => message.subject === `[Test] ${post.title}`,
    )
    expect(tests).toHaveLength(1)
    const [message] = tests
    expect(message!.text).toContain(post.body)
    expect(message!.text).toContain(post.url)
    expect(message!.headers['List-Unsubscribe']).toMatch(
      /^<https:\/\/edgepress\.test\/api\/v1\/subscribers\/unsubscribe\?token=/,
    )
    expect(message!.headers['List-Unsubscribe-Post']).toBe('List-Unsubscribe=One-Click')
    expect(message!.headers['List-Id']).toBe(
      listId({ listName: config.feedTitle, publicBaseUrl: config.publicBaseUrl }),
    )
    // Nobody else: no other email of it, no send, nothing to the subscribers.
    const { n } = (await env.DB.prepare('SELECT count(*) AS n FROM email_outbox WHERE subject = ?')
      .bind(`[Test] ${post.title}`)
      .first<{ n: number }>())!
    expect(n).toBe(1)
    for (const subscriber of subscribers) expect(await outboxMessagesTo(subscriber.email)).toEqual([])
    await expectProblem(await api('GET', newsletterPath(post), undefined, admin.token), 404, 'not_found')
  })
})

describe('the outbox’s single sends', () => {
  it('carry an Idempotency-Key stable per outbox row: a retry after a lost answer sends nothing twice', async () => {
    const admin = await newAdmin()
    await env.DB.prepare('UPDATE users SET email_verified = 1 WHERE id = ?').bind(admin.user.id).run()
    const post = await createPost(admin)
    // The registration's email is delivered first, so that only the test emails meet the fake.
    await eventually(
      () => outboxMessagesTo(admin.user.email),
      (messages) => messages.every((message) => message.status === 'sent'),
      'the registration email',
    )
    const provider = scenario()
    routeConsoleMailTo(provider, [admin.user.email])
    // The provider sends the first attempt but answers 500.
    await provider.setFaults([{ recipient: admin.user.email, fault: { kind: 'status', status: 500, accept: true } }])
    expect((await api('POST', `${newsletterPath(post)}/test`, undefined, admin.token)).status).toBe(202)
    const find = async () =>
      (await outboxMessagesTo(admin.user.email)).find((message) => message.subject === `[Test] ${post.title}`)
    const first = await eventually(
      find,
      (message) => message?.attempts === 1 && message.status !== 'sending',
      'the first attempt',
    )
    expect(first!.status).toBe('pending')
    expect(first!.last_error).toContain('HTTP 500')

    // Its retry comes due; the queue's drain delivers it.
    await env.DB.prepare('UPDATE email_outbox SET next_attempt_at = ? WHERE id = ?')
      .bind(Date.now() - 1000, first!.id)
      .run()
    await workerEnv.MAIL_QUEUE!.send({ kind: 'outbox' })
    const sent = await eventually(find, (message) => message?.status === 'sent', 'the retry')
    expect(sent!.attempts).toBe(2)

    // A second test email is another row, under another key.
    expect((await api('POST', `${newsletterPath(post)}/test`, undefined, admin.token)).status).toBe(202)
    const rows = await eventually(
      async () =>
        (await outboxMessagesTo(admin.user.email)).filter((message) => message.subject === `[Test] ${post.title}`),
      (messages) => messages.length === 2 && messages.every((message) => message.status === 'sent'),
      'the second test email',
    )
    const state = await provider.state()
    const requests = state.requests.filter((request) => request.endpoint === 'single')
    // edgepress-outbox-<row id>-<row created_at>: the same for both tries of a row.
    const keys = requests.map((request) => request.idempotencyKey)
    expect(keys[0]).toMatch(new RegExp(`^edgepress-outbox-${rows[0]!.id}-\\d+$`))
    expect(keys[1]).toBe(keys[0])
    expect(keys[2]).toMatch(new RegExp(`^edgepress-outbox-${rows[1]!.id}-\\d+$`))
    expect(requests.map((request) => request.deduplicated)).toEqual([false, true, false])
    expect(state.delivered.filter((email) => email.to === admin.user.email)).toHaveLength(2)
  })
})
