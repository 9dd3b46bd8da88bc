import { createExecutionContext, createScheduledController, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { eq, inArray } from 'drizzle-orm'
import { afterEach, beforeEach, describe, it, vi } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { emailOutbox, oneTimeTokens } from '../db/schema'
import type { OutboxRow } from '../db/schema'
import worker from '../index'
import { createDb } from '../db/client'
import type { EmailMessage } from './messages'
import { getConfig } from '../config'
import { createMailer } from './mailer'
import { MAX_DELIVERY_ATTEMPTS, deliverDueEmails, retryDelayMs } from './outbox'
import { consoleTransport, httpTransport, transportFor } from './transports'
import type { MailTransport, OutgoingEmail } from './transports'

const db = createDb(env)
const FROM = 'edgepress <no-reply@edgepress.test>'
// Far in the future: the suite's requests hand the outbox to the mail queue, whose drains run on
// the real clock and so never see these rows as due; only this file's drains, at T0, do.
const T0 = new Date('2099-06-01T12:00:00.000Z')
const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const NOTHING = { sent: 0, retried: 0, failed: 0 }

/** `T0` plus `ms`: every test passes time explicitly instead of waiting. */
function at(ms: number): Date {
  return new Date(T0.getTime() + ms)
}

/** A transport that records every attempt and fails while `failure` is set. */
interface FakeTransport extends MailTransport {
  calls: OutgoingEmail[]
  failure: string | null
}

/** The outbox sends one message at a time; a batch reaching these fakes is a bug. */
const NO_BATCHES: Pick<MailTransport, 'sendBatch'> = {
  async sendBatch() {
    throw new Error('the outbox never sends batches')
  },
}

/** The HTTP transport with its single-message endpoint at `url`. */
function httpOnly(url: string, apiKey: string): MailTransport {
  return httpTransport({ single: url, batch: `${url}/batch` }, apiKey)
}

function fakeTransport(failure: string | null = null): FakeTransport {
  const transport: FakeTransport = {
    name: 'fake',
    calls: [],
    failure,
    ...NO_BATCHES,
    async send(email) {
      transport.calls.push(email)
      if (transport.failure !== null) throw new Error(transport.failure)
    },
  }
  return transport
}

function messageTo(to = `${uniqueName('mail')}@example.com`): EmailMessage {
  return {
    to,
    subject: `Hello ${to}`,
    text: `Open http://localhost:8787/verify-email?token=t-${to}`,
    headers: { 'X-Test': to },
  }
}

/** A Mailer as the cron would have it: the test configuration, no request. */
function mailer() {
  return createMailer({ config: getConfig(env), requestUrl: undefined, executionCtx: undefined, bindings: env })
}

/** Queues one message at `now` the way the handlers do (inside db.batch) and returns its row. */
async function queue(now: Date, message: EmailMessage = messageTo()): Promise<OutboxRow> {
  await db.batch([mailer().queue(db, message, now)])
  return rowTo(message.to)
}

async function rowTo(recipient: string): Promise<OutboxRow> {
  const row = await db.query.emailOutbox.findFirst({ where: eq(emailOutbox.recipient, recipient) })
  if (row === undefined) throw new Error(`no outbox row for ${recipient}`)
  return row
}

async function reload(row: OutboxRow): Promise<OutboxRow> {
  const fresh = await db.query.emailOutbox.findFirst({ where: eq(emailOutbox.id, row.id) })
  if (fresh === undefined) throw new Error(`outbox row ${row.id} vanished`)
  return fresh
}

// The outbox is one queue that deliverDueEmails drains as a whole, whoever queued the messages;
// each test starts from an empty queue so its delivery reports count only its own messages.
beforeEach(async () => {
  await env.DB.prepare('DELETE FROM email_outbox').run()
})

afterEach(() => {
  vi.restoreAllMocks()
})

describe('Mailer.queue', () => {
  it('lands in the outbox as pending with attempts 0, due at once', async ({ expect }) => {
    const message = messageTo()
    const row = await queue(T0, message)
    expect(row).toMatchObject({
      recipient: message.to,
      subject: message.subject,
      text: message.text,
      status: 'pending',
      attempts: 0,
      lastError: null,
      sentAt: null,
    })
    expect(JSON.parse(row.headers)).toEqual(message.headers)
    expect(row.nextAttemptAt).toEqual(T0)
    expect(row.createdAt).toEqual(T0)
  })

  it('stores an empty header object when the message has none', async ({ expect }) => {
    const { headers: _headers, ...message } = messageTo()
    const row = await queue(T0, message)
    expect(row.headers).toBe('{}')
  })

  it('is rolled back with the batch it belongs to', async ({ expect }) => {
    const message = messageTo()
    const tokenRow = {
      tokenHash: `hash-${uniqueName('token')}`,
      purpose: 'email_verification' as const,
      email: message.to,
      createdAt: T0,
      expiresAt: at(DAY),
    }
    // The second insert of the same primary key fails, so the whole batch must leave no trace.
    await expect(
      db.batch([
        mailer().queue(db, message, T0),
        db.insert(oneTimeTokens).values(tokenRow),
        db.insert(oneTimeTokens).values(tokenRow),
      ]),
    ).rejects.toThrow()
    expect(await db.query.emailOutbox.findFirst({ where: eq(emailOutbox.recipient, message.to) })).toBeUndefined()
  })
})

describe('deliverDueEmails', () => {
  it('sends a due message and marks it sent', async ({ expect }) => {
    const message = messageTo()
    const row = await queue(T0, message)
    const transport = fakeTransport()

    const report = await deliverDueEmails(db, transport, FROM, T0)
    expect(report).toEqual({ sent: 1, retried: 0, failed: 0 })
    expect(transport.calls).toEqual([
      { from: FROM, to: message.to, subject: message.subject, text: message.text, headers: message.headers },
    ])
    const sent = await reload(row)
    expect(sent).toMatchObject({ status: 'sent', attempts: 1, lastError: null })
    expect(sent.sentAt).toEqual(T0)

    expect(await deliverDueEmails(db, transport, FROM, at(DAY))).toEqual(NOTHING)
    expect(transport.calls).toHaveLength(1)
  })

  it('counts every message it sends', async ({ expect }) => {
    const rows = [await queue(T0), await queue(T0), await queue(T0)]
    const transport = fakeTransport()
    expect(await deliverDueEmails(db, transport, FROM, T0)).toEqual({ sent: 3, retried: 0, failed: 0 })
    expect(transport.calls.map((email) => email.to).sort()).toEqual(rows.map((row) => row.recipient).sort())
  })

  it('leases a message while it is being sent', async ({ expect }) => {
    const row = await queue(T0)
    const seen: OutboxRow[] = []
    const transport: MailTransport = {
      name: 'peeking',
      ...NO_BATCHES,
      async send() {
        seen.push(await reload(row))
      },
    }
    await deliverDueEmails(db, transport, FROM, T0)
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatchObject({ status: 'sending', attempts: 1 })
    expect(seen[0]!.nextAttemptAt.getTime()).toBeGreaterThan(T0.getTime())
  })

  it('leases from the claim, not from a `now` minutes in the past: a concurrent drain does not send it again', async ({
    expect,
  }) => {
    // A cron drain running late: its `now` is its scheduled time, five minutes ago.
    const scheduled = new Date(Date.now() - 5 * MINUTE)
    const row = await queue(new Date(scheduled.getTime() - MINUTE))
    const rival = fakeTransport()
    const seen: { leaseEnds: number; clock: number }[] = []
    let rivalReport: unknown
    const transport: MailTransport = {
      name: 'peeking',
      ...NO_BATCHES,
      async send() {
        seen.push({ leaseEnds: (await reload(row)).nextAttemptAt.getTime(), clock: Date.now() })
        // Meanwhile a request-time drain runs on the real clock.
        rivalReport = await deliverDueEmails(createDb(env), rival, FROM, new Date())
      },
    }
    await deliverDueEmails(db, transport, FROM, scheduled)
    expect(rival.calls).toEqual([])
    expect(rivalReport).toEqual(NOTHING)
    expect(seen).toHaveLength(1)
    expect(seen[0]!.leaseEnds).toBeGreaterThan(seen[0]!.clock)
    expect(await reload(row)).toMatchObject({ status: 'sent', attempts: 1 })
  })

  it('reads the clock at each claim: a message claimed late in a drain gets a full lease', async ({ expect }) => {
    const first = await queue(at(-2 * MINUTE))
    const second = await queue(at(-MINUTE))
    let clock = T0.getTime()
    const leases = new Map<number, number>()
    const rival = fakeTransport()
    const transport: MailTransport = {
      name: 'slow',
      ...NO_BATCHES,
      async send(email) {
        const row = email.to === first.recipient ? first : second
        leases.set(row.id, (await reload(row)).nextAttemptAt.getTime())
        clock += 50_000 // each send takes 50 s
        // During the second send (100 s into the drain) another drain looks for due messages.
        if (row === second)
          await deliverDueEmails(createDb(env), rival, FROM, new Date(clock), 25, () => new Date(clock))
      },
    }
    const report = await deliverDueEmails(db, transport, FROM, T0, 25, () => new Date(clock))
    expect(rival.calls).toEqual([])
    expect(report).toEqual({ sent: 2, retried: 0, failed: 0 })
    expect(leases.get(first.id)).toBe(T0.getTime() + MINUTE)
    expect(leases.get(second.id)).toBe(T0.getTime() + 50_000 + MINUTE)
    expect(await reload(second)).toMatchObject({ status: 'sent', attempts: 1 })
  })

  it('puts a failed message back to pending, records the error and backs off by retryDelayMs(1)', async ({
    expect,
  }) => {
    const row = await queue(T0)
    const transport = fakeTransport('550 mailbox unavailable')

    expect(await deliverDueEmails(db, transport, FROM, T0)).toEqual({ sent: 0, retried: 1, failed: 0 })
    const failed = await reload(row)
    expect(failed).toMatchObject({ status: 'pending', attempts: 1, lastError: '550 mailbox unavailable', sentAt: null })
    expect(retryDelayMs(1)).toBe(MINUTE)
    expect(failed.nextAttemptAt).toEqual(at(retryDelayMs(1)))
  })

  it('does not retry before next_attempt_at, and retries from then on', async ({ expect }) => {
    const row = await queue(T0)
    const transport = fakeTransport('temporary failure')
    await deliverDueEmails(db, transport, FROM, T0)
    expect(transport.calls).toHaveLength(1)

    expect(await deliverDueEmails(db, transport, FROM, T0)).toEqual(NOTHING)
    expect(await deliverDueEmails(db, transport, FROM, at(MINUTE - 1))).toEqual(NOTHING)
    expect(transport.calls).toHaveLength(1)
    expect((await reload(row)).status).toBe('pending')

    transport.failure = null
    expect(await deliverDueEmails(db, transport, FROM, at(MINUTE))).toEqual({ sent: 1, retried: 0, failed: 0 })
    expect(transport.calls).toHaveLength(2)
    const sent = await reload(row)
    expect(sent).toMatchObject({ status: 'sent', attempts: 2, lastError: null })
    expect(sent.sentAt).toEqual(at(MINUTE))
  })

  it('backs off exponentially and gives up as failed after MAX_DELIVERY_ATTEMPTS, never to retry', async ({
    expect,
  }) => {
    const row = await queue(T0)
    const transport = fakeTransport('connection refused')
    let now = T0
    for (let attempt = 1; attempt <= MAX_DELIVERY_ATTEMPTS; attempt++) {
      const report = await deliverDueEmails(db, transport, FROM, now)
      const current = await reload(row)
      expect(current.attempts).toBe(attempt)
      expect(current.nextAttemptAt.getTime() - now.getTime()).toBe(retryDelayMs(attempt))
      if (attempt < MAX_DELIVERY_ATTEMPTS) {
        expect(report).toEqual({ sent: 0, retried: 1, failed: 0 })
        expect(current.status).toBe('pending')
      } else {
        expect(report).toEqual({ sent: 0, retried: 0, failed: 1 })
        expect(current).toMatchObject({ status: 'failed', lastError: 'connection refused' })
      }
      now = current.nextAttemptAt
    }
    expect(transport.calls).toHaveLength(MAX_DELIVERY_ATTEMPTS)

    transport.failure = null
    expect(await deliverDueEmails(db, transport, FROM, at(365 * DAY))).toEqual(NOTHING)
    expect(transport.calls).toHaveLength(MAX_DELIVERY_ATTEMPTS)
    expect((await reload(row)).status).toBe('failed')
  })

  it('delivers after several failures once the transport recovers', async ({ expect }) => {
    const row = await queue(T0)
    const transport = fakeTransport('503 try later')
    let now = T0
    for (let failures = 0; failures < 3; failures++) {
      await deliverDueEmails(db, transport, FROM, now)
      now = (await reload(row)).nextAttemptAt
    }
    transport.failure = null
    expect(await deliverDueEmails(db, transport, FROM, now)).toEqual({ sent: 1, retried: 0, failed: 0 })
    expect(await reload(row)).toMatchObject({ status: 'sent', attempts: 4, lastError: null, sentAt: now })
  })

  it('keeps at most 500 characters of the error', async ({ expect }) => {
    const row = await queue(T0)
    await deliverDueEmails(db, fakeTransport('x'.repeat(2_000)), FROM, T0)
    expect((await reload(row)).lastError).toBe('x'.repeat(500))
  })

  it('leaves messages that are not due yet', async ({ expect }) => {
    const later = await queue(at(HOUR))
    const transport = fakeTransport()
    expect(await deliverDueEmails(db, transport, FROM, T0)).toEqual(NOTHING)
    expect(transport.calls).toEqual([])
    expect((await reload(later)).status).toBe('pending')
  })

  it('sends at most `limit` messages, the longest due first', async ({ expect }) => {
    const oldest = await queue(at(-3 * MINUTE))
    const middle = await queue(at(-2 * MINUTE))
    const newest = await queue(at(-1 * MINUTE))
    const transport = fakeTransport()
    expect(await deliverDueEmails(db, transport, FROM, T0, 2)).toEqual({ sent: 2, retried: 0, failed: 0 })
    expect(transport.calls.map((email) => email.to)).toEqual([oldest.recipient, middle.recipient])
    expect((await reload(newest)).status).toBe('pending')
  })

  it('sends a message exactly once when two drains run at the same time', async ({ expect }) => {
    const row = await queue(T0)
    const transport = fakeTransport()
    const reports = await Promise.all([
      deliverDueEmails(db, transport, FROM, T0),
      deliverDueEmails(createDb(env), transport, FROM, T0),
    ])
    expect(transport.calls).toHaveLength(1)
    expect(reports.reduce((sum, report) => sum + report.sent, 0)).toBe(1)
    expect(await reload(row)).toMatchObject({ status: 'sent', attempts: 1 })
  })

  it('sends each of several messages exactly once under three concurrent drains', async ({ expect }) => {
    const rows = await Promise.all(Array.from({ length: 6 }, () => queue(T0)))
    const transport = fakeTransport()
    const reports = await Promise.all([1, 2, 3].map(() => deliverDueEmails(db, transport, FROM, T0)))
    expect(transport.calls.map((email) => email.to).sort()).toEqual(rows.map((row) => row.recipient).sort())
    expect(reports.reduce((sum, report) => sum + report.sent, 0)).toBe(rows.length)
    const statuses = await db
      .select({ status: emailOutbox.status })
      .from(emailOutbox)
      .where(
        inArray(
          emailOutbox.id,
          rows.map((row) => row.id),
        ),
      )
    expect(statuses.every((row) => row.status === 'sent')).toBe(true)
  })

  it('reclaims a message left sending by a vanished sender once its lease has expired', async ({ expect }) => {
    const message = messageTo()
    await db.insert(emailOutbox).values({
      recipient: message.to,
      subject: message.subject,
      text: message.text,
      status: 'sending',
      attempts: 1,
      nextAttemptAt: at(-MINUTE),
      createdAt: at(-5 * MINUTE),
    })
    const transport = fakeTransport()
    expect(await deliverDueEmails(db, transport, FROM, T0)).toEqual({ sent: 1, retried: 0, failed: 0 })
    expect(transport.calls.map((email) => email.to)).toEqual([message.to])
    expect(await rowTo(message.to)).toMatchObject({ status: 'sent', attempts: 2 })
  })

  it('leaves a message alone while its sending lease is still running', async ({ expect }) => {
    const message = messageTo()
    await db.insert(emailOutbox).values({
      recipient: message.to,
      subject: message.subject,
      text: message.text,
      status: 'sending',
      attempts: 1,
      nextAttemptAt: at(30_000),
      createdAt: T0,
    })
    const transport = fakeTransport()
    expect(await deliverDueEmails(db, transport, FROM, T0)).toEqual(NOTHING)
    expect(transport.calls).toEqual([])
    expect(await rowTo(message.to)).toMatchObject({ status: 'sending', attempts: 1 })
  })

  it('records an HTTP provider failure without the API key and retries it', async ({ expect }) => {
    const apiKey = 're_secret_key_that_must_not_leak'
    vi.spyOn(globalThis, 'fetch').mockImplementation(
      async () => new Response('{"message":"rate limited"}', { status: 429 }),
    )
    const row = await queue(T0)
    expect(await deliverDueEmails(db, httpOnly('https://mail.example/send', apiKey), FROM, T0)).toEqual({
      sent: 0,
      retried: 1,
      failed: 0,
    })
    const failed = await reload(row)
    expect(failed.status).toBe('pending')
    expect(failed.lastError).toContain('429')
    expect(failed.lastError).not.toContain(apiKey)
  })
})

describe('retryDelayMs', () => {
  it('starts at one minute and doubles with each attempt', ({ expect }) => {
    expect([1, 2, 3, 4, 5].map(retryDelayMs)).toEqual([1, 2, 4, 8, 16].map((minutes) => minutes * MINUTE))
    expect(retryDelayMs(0)).toBe(MINUTE)
  })

  it('is capped at six hours', ({ expect }) => {
    expect(retryDelayMs(9)).toBe(256 * MINUTE)
    expect(retryDelayMs(10)).toBe(6 * HOUR)
    expect(retryDelayMs(50)).toBe(6 * HOUR)
    expect(retryDelayMs(10_000)).toBe(6 * HOUR)
  })

  it('never shrinks as attempts grow', ({ expect }) => {
    const delays = Array.from({ length: 40 }, (_, i) => retryDelayMs(i + 1))
    expect(delays).toEqual([...delays].sort((a, b) => a - b))
  })
})

describe('the cron (scheduled)', () => {
  async function runCron(scheduledTime: Date): Promise<void> {
    const controller = createScheduledController({ scheduledTime, cron: '*/5 * * * *' })
    const ctx = createExecutionContext()
    worker.scheduled(controller, env, ctx)
    await waitOnExecutionContext(ctx)
  }

  it('delivers due messages through the console transport', async ({ expect }) => {
    const log = vi.spyOn(console, 'log')
    const message = messageTo()
    const row = await queue(at(-MINUTE), message)
    const notDue = await queue(at(HOUR))
    await runCron(T0)

    const sent = await reload(row)
    expect(sent).toMatchObject({ status: 'sent', attempts: 1 })
    expect(sent.sentAt).toEqual(T0)
    expect((await reload(notDue)).status).toBe('pending')
    const printed = log.mock.calls.map((args) => args.join(' ')).join('\n')
    expect(printed).toContain(`To: ${message.to}`)
    expect(printed).toContain(message.text)
  })

  it('prunes one-time tokens expired more than 7 days ago and keeps recent ones', async ({ expect }) => {
    const tag = uniqueName('prune')
    const token = (name: string, expiresAt: Date) => ({
      tokenHash: `${tag}-${name}`,
      purpose: 'password_reset' as const,
      email: `${tag}@example.com`,
      createdAt: new Date(expiresAt.getTime() - HOUR),
      expiresAt,
    })
    await db
      .insert(oneTimeTokens)
      .values([
        token('long-expired', at(-8 * DAY)),
        token('just-past-retention', at(-7 * DAY - 1)),
        token('recently-expired', at(-6 * DAY)),
        token('live', at(HOUR)),
      ])
    await runCron(T0)

    const left = await db
      .select({ tokenHash: oneTimeTokens.tokenHash })
      .from(oneTimeTokens)
      .where(
        inArray(
          oneTimeTokens.tokenHash,
          ['long-expired', 'just-past-retention', 'recently-expired', 'live'].map((name) => `${tag}-${name}`),
        ),
      )
    expect(left.map((row) => row.tokenHash).sort()).toEqual([`${tag}-live`, `${tag}-recently-expired`])
  })
})

describe('httpTransport', () => {
  const email: OutgoingEmail = {
    from: FROM,
    to: 'reader@example.com',
    subject: 'Confirm your subscription',
    text: 'Open http://localhost:8787/confirm-subscription?token=abc',
    headers: { 'List-Unsubscribe': '<http://localhost:8787/unsubscribe?token=xyz>' },
  }

  it('posts the message as JSON with the API key as a bearer token', async ({ expect }) => {
    const fetchSpy = vi
      .spyOn(globalThis, 'fetch')
      .mockImplementation(async () => new Response('{"id":"1"}', { status: 200 }))
    await httpOnly('https://mail.example/emails', 'key-123').send(email, { idempotencyKey: 'edgepress-outbox-1' })

    expect(fetchSpy).toHaveBeenCalledTimes(1)
    const [input, init] = fetchSpy.mock.calls[0]!
    expect(String(input)).toBe('https://mail.example/emails')
    expect(init?.method).toBe('POST')
    const headers = new Headers(init?.headers)
    expect(headers.get('authorization')).toBe('Bearer key-123')
    expect(headers.get('content-type')).toMatch(/^application\/json/)
    expect(JSON.parse(String(init?.body))).toEqual({
      from: email.from,
      to: [email.to],
      subject: email.subject,
      text: email.text,
      headers: email.headers,
    })
  })

  it.for([400, 401, 403, 422, 500, 503])(
    'throws on HTTP %i with the status and without the API key',
    async (status, { expect }) => {
      const apiKey = 'key-that-must-stay-secret'
      vi.spyOn(globalThis, 'fetch').mockImplementation(async () => new Response('{"message":"nope"}', { status }))
      const error = await httpOnly('https://mail.example/emails', apiKey)
        .send(email, { idempotencyKey: 'edgepress-outbox-1' })
        .then(
          () => null,
          (err: unknown) => err,
        )
      expect(error).toBeInstanceOf(Error)
      expect((error as Error).message).toContain(String(status))
      expect((error as Error).message).not.toContain(apiKey)
    },
  )

  it('lets a network error propagate, so the outbox retries the message', async ({ expect }) => {
    vi.spyOn(globalThis, 'fetch').mockImplementation(async () => {
      throw new TypeError('Network connection lost.')
    })
    await expect(
      httpOnly('https://mail.example/emails', 'k').send(email, { idempotencyKey: 'edgepress-outbox-1' }),
    ).rejects.toThrow('Network connection lost.')
  })
})

describe('transportFor', () => {
  it('is the console transport by default, and none for a deployed (https://) PUBLIC_BASE_URL', ({ expect }) => {
    const config = getConfig(env)
    expect(config.mail.transport).toBe('console')
    expect(transportFor(config)).toBe(consoleTransport)
    expect(transportFor({ ...config, publicBaseUrl: 'http://edgepress.test.lan:8787' })).toBe(consoleTransport)
    expect(transportFor({ ...config, publicBaseUrl: 'https://localhost:8787' })).toBe(consoleTransport)
    expect(transportFor({ ...config, publicBaseUrl: 'https://app.example.com' })).toBeUndefined()
    expect(
      transportFor({
        ...config,
        publicBaseUrl: 'https://app.example.com',
        mail: { ...config.mail, transport: 'http', apiKey: 'k' },
      })?.name,
    ).toBe('http')
  })

  it.for(['http', 'resend'] as const)('is the HTTP transport for MAIL_TRANSPORT=%s', (transport, { expect }) => {
    const config = getConfig(env)
    expect(transportFor({ ...config, mail: { ...config.mail, transport, apiKey: 'k' } })?.name).toBe('http')
  })

  it('the console transport prints the recipient, subject, headers and full text', async ({ expect }) => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {})
    const email: OutgoingEmail = {
      from: FROM,
      to: 'reader@example.com',
      subject: 'Reset your password',
      text: 'Open http://localhost:8787/reset-password?token=tok_123',
      headers: { 'List-Unsubscribe': '<http://localhost:8787/unsubscribe?token=u1>' },
    }
    await consoleTransport.send(email, { idempotencyKey: 'edgepress-outbox-1' })
    const printed = log.mock.calls.map((args) => args.join(' ')).join('\n')
    expect(printed).toContain('To: reader@example.com')
    expect(printed).toContain('Subject: Reset your password')
    expect(printed).toContain('List-Unsubscribe: <http://localhost:8787/unsubscribe?token=u1>')
    expect(printed).toContain(email.text)
  })
})
