import { env } from 'cloudflare:workers'
import { afterEach, describe, it, vi } from 'vitest'
import {
  BASE_URL,
  api,
  expectProblem,
  fetchWorker,
  outboxMessagesTo,
  tokenFromEmail,
  uniqueName,
} from '../../../test/helpers'
import type { Env as WorkerEnv } from '../../config'
import { signWebhook } from '../../lib/webhook-signatures'

// POST /api/v1/email/events: the provider's webhooks, signed per Standard Webhooks, against the
// real local D1. The worker runs with MAIL_WEBHOOK_SECRET set in an env of its own (built once:
// config is memoised per env object); the shared env has none, so the route is 404 there.

const SECRET = `whsec_${btoa('edgepress test-only webhook secret')}`
const OTHER_SECRET = `whsec_${btoa('a secret the provider does not use')}`
const signedEnv: WorkerEnv = { ...env, MAIL_WEBHOOK_SECRET: SECRET }
const EVENTS_URL = `${BASE_URL}/api/v1/email/events`

type Status = 'pending' | 'active' | 'unsubscribed' | 'bounced' | 'complained'

interface Delivery {
  id?: string
  /** Unix seconds; now by default. */
  timestamp?: number
  /** The key the sender signs with. */
  secret?: string
  /** `svix` sends Resend's spelling of the three headers. */
  spelling?: 'webhook' | 'svix'
  /** Replaces the signature header. */
  signature?: string
  /** The body sent, when it is not the body signed. */
  sentBody?: string
  headers?: Record<string, string>
  workerEnv?: WorkerEnv
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000)

/** Delivers an event (an object is sent as JSON) as the provider would, signed unless told otherwise. */
async function deliver(event: unknown, options: Delivery = {}): Promise<Response> {
  const body = typeof event === 'string' ? event : JSON.stringify(event)
  const id = options.id ?? `msg_${crypto.randomUUID()}`
  const timestamp = options.timestamp ?? nowSeconds()
  const signature =
    options.signature ?? (await signWebhook(options.secret ?? SECRET, id, timestamp, new TextEncoder().encode(body)))
  const prefix = options.spelling ?? 'webhook'
  const headers = {
    'content-type': 'application/json',
    [`${prefix}-id`]: id,
    [`${prefix}-timestamp`]: String(timestamp),
    [`${prefix}-signature`]: signature,
    ...options.headers,
  }
  return fetchWorker(
    EVENTS_URL,
    { method: 'POST', headers, body: options.sentBody ?? body },
    options.workerEnv ?? signedEnv,
  )
}

/** Resend's shape of an email event. */
function resendEvent(type: string, to: string[]): Record<string, unknown> {
  return {
    type,
    created_at: new Date().toISOString(),
    data: {
      email_id: crypto.randomUUID(),
      created_at: new Date().toISOString(),
      from: 'edgepress <news@example.com>',
      to,
      subject: 'A post',
      ...(type === 'email.bounced'
        ? { bounce: { type: 'Permanent', subType: 'General', message: 'The recipient does not exist.' } }
        : {}),
    },
  }
}

const uniqueEmail = (prefix = 'events'): string => `${uniqueName(prefix)}@example.com`

/** A subscriber with this status, inserted directly; returns its address. */
async function subscriber(status: Status, email = uniqueEmail()): Promise<string> {
  const now = Date.now()
  await env.DB.prepare(
    'INSERT INTO subscribers (email, name, status, created_at, updated_at, confirmed_at, unsubscribe_token_hash) VALUES (?1, NULL, ?2, ?3, ?3, ?4, ?5)',
  )
    .bind(email, status, now, status === 'pending' ? null : now, crypto.randomUUID())
    .run()
  return email
}

async function statusOf(email: string): Promise<Status | undefined> {
  const row = await env.DB.prepare('SELECT status FROM subscribers WHERE email = ?')
    .bind(email)
    .first<{ status: Status }>()
  return row?.status
}

async function recorded(id: string): Promise<{ type: string; received_at: number }[]> {
  const { results } = await env.DB.prepare('SELECT type, received_at FROM email_events WHERE webhook_id = ?')
    .bind(id)
    .all<{ type: string; received_at: number }>()
  return results
}

async function expectReceived(res: Response): Promise<void> {
  const text = await res.text()
  if (res.status !== 200) throw new Error(`expected 200, got ${res.status}: ${text}`)
  if (!(res.headers.get('content-type') ?? '').startsWith('application/json')) throw new Error('not JSON')
  if (text !== '{"status":"received"}') throw new Error(`unexpected body ${text}`)
}

afterEach(() => {
  vi.useRealTimers()
})

describe('POST /api/v1/email/events: bounces and complaints', () => {
  it('sets the subscriber of a hard bounce to bounced: 200 {status:"received"}', async ({ expect }) => {
    const email = await subscriber('active')
    const id = `msg_${crypto.randomUUID()}`
    await expectReceived(await deliver(resendEvent('email.bounced', [email]), { id }))
    expect(await statusOf(email)).toBe('bounced')
    expect(await recorded(id)).toEqual([{ type: 'email.bounced', received_at: expect.any(Number) }])
  })

  it('sets the subscriber of a complaint to complained', async ({ expect }) => {
    const email = await subscriber('active')
    await expectReceived(await deliver(resendEvent('email.complained', [email])))
    expect(await statusOf(email)).toBe('complained')
  })

  it('matches the address in any case, and in the "Name <address>" form', async ({ expect }) => {
    const upper = await subscriber('active', uniqueEmail('Case').toUpperCase())
    const named = await subscriber('active')
    await expectReceived(await deliver(resendEvent('email.bounced', [upper.toLowerCase()])))
    await expectReceived(await deliver(resendEvent('email.bounced', [`Reader <${named.toUpperCase()}>`])))
    expect(await statusOf(upper)).toBe('bounced')
    expect(await statusOf(named)).toBe('bounced')
  })

  it('marks every subscriber the event names, and nobody else', async ({ expect }) => {
    const [first, second, bystander] = [
      await subscriber('active'),
      await subscriber('pending'),
      await subscriber('active'),
    ]
    await expectReceived(await deliver(resendEvent('email.bounced', [first, second, uniqueEmail('nobody')])))
    expect([await statusOf(first), await statusOf(second), await statusOf(bystander)]).toEqual([
      'bounced',
      'bounced',
      'active',
    ])
  })

  it('marks pending and unsubscribed subscribers too, and never turns a complaint back into a bounce', async ({
    expect,
  }) => {
    const pending = await subscriber('pending')
    const gone = await subscriber('unsubscribed')
    const complained = await subscriber('complained')
    const bounced = await subscriber('bounced')
    await expectReceived(await deliver(resendEvent('email.bounced', [pending, gone, complained])))
    await expectReceived(await deliver(resendEvent('email.complained', [bounced])))
    expect(await statusOf(pending)).toBe('bounced')
    expect(await statusOf(gone)).toBe('bounced')
    expect(await statusOf(complained)).toBe('complained')
    expect(await statusOf(bounced)).toBe('complained')
  })

  it('answers an unknown address exactly like a known one, and changes nothing', async ({ expect }) => {
    const known = await deliver(resendEvent('email.bounced', [await subscriber('active')]))
    const unknown = await deliver(resendEvent('email.bounced', [uniqueEmail('unknown')]))
    expect(unknown.status).toBe(known.status)
    expect(await unknown.text()).toBe(await known.text())
  })

  it('records other event types and changes nobody', async ({ expect }) => {
    const email = await subscriber('active')
    for (const type of ['email.delivered', 'email.delivery_delayed', 'email.opened', 'contact.created']) {
      const id = `msg_${crypto.randomUUID()}`
      await expectReceived(await deliver(resendEvent(type, [email]), { id }))
      expect(await recorded(id), type).toEqual([{ type, received_at: expect.any(Number) }])
    }
    // Their data is taken as it comes: no `to`, or one no bounce could have.
    await expectReceived(await deliver({ type: 'domain.updated', data: { to: 'not a list', id: 1 } }))
    await expectReceived(await deliver({ type: 'email.sent' }))
    expect(await statusOf(email)).toBe('active')
  })

  it('accepts the svix- spelling of the headers (what Resend sends)', async ({ expect }) => {
    const email = await subscriber('active')
    await expectReceived(await deliver(resendEvent('email.bounced', [email]), { spelling: 'svix' }))
    expect(await statusOf(email)).toBe('bounced')
  })

  it('accepts several space-separated signatures when one matches (secret rotation)', async ({ expect }) => {
    const email = await subscriber('active')
    const body = JSON.stringify(resendEvent('email.complained', [email]))
    const id = `msg_${crypto.randomUUID()}`
    const timestamp = nowSeconds()
    const old = await signWebhook(OTHER_SECRET, id, timestamp, new TextEncoder().encode(body))
    const current = await signWebhook(SECRET, id, timestamp, new TextEncoder().encode(body))
    await expectReceived(await deliver(body, { id, timestamp, signature: `${old} ${current}` }))
    expect(await statusOf(email)).toBe('complained')
  })
})

describe('POST /api/v1/email/events: each event applied once', () => {
  it('answers a redelivery of the same webhook-id 200 and applies nothing again', async ({ expect }) => {
    const email = await subscriber('active')
    const id = `msg_${crypto.randomUUID()}`
    const event = resendEvent('email.bounced', [email])
    await expectReceived(await deliver(event, { id }))
    // An administrator reactivates the address; the provider then redelivers the old event.
    await env.DB.prepare("UPDATE subscribers SET status = 'active' WHERE email = ?").bind(email).run()
    await expectReceived(await deliver(event, { id }))
    await expectReceived(await deliver(event, { id, spelling: 'svix', timestamp: nowSeconds() - 60 }))
    expect(await statusOf(email)).toBe('active')
    expect(await recorded(id)).toHaveLength(1)
  })

  it('applies nothing when the batch fails, and exactly once on the retry', async ({ expect }) => {
    const email = await subscriber('active')
    const id = `msg_${crypto.randomUUID()}`
    const event = resendEvent('email.bounced', [email])
    const res = await deliver(event, { id, workerEnv: failingLastStatement })
    expect(res.status).toBeGreaterThanOrEqual(500)
    expect(await statusOf(email)).toBe('active')
    expect(await recorded(id)).toEqual([])

    await expectReceived(await deliver(event, { id }))
    expect(await statusOf(email)).toBe('bounced')
    await env.DB.prepare("UPDATE subscribers SET status = 'active' WHERE email = ?").bind(email).run()
    await expectReceived(await deliver(event, { id }))
    expect(await statusOf(email)).toBe('active')
  })
})

/**
 * The worker's D1 with the last statement of every batch replaced, inside the real batch, by one
 * that fails when D1 executes it: the statements before it ran and must be rolled back.
 */
function lastStatementFails(real: D1Database): D1Database {
  const sabotage = (session: D1DatabaseSession | D1Database) =>
    new Proxy(session, {
      get(target, property) {
        if (property === 'batch') {
          return (statements: D1PreparedStatement[]) =>
            target.batch([
              ...statements.slice(0, -1),
              target.prepare('INSERT INTO email_events (webhook_id, type, received_at) VALUES (?, NULL, 0)').bind('x'),
            ])
        }
        const value = Reflect.get(target, property, target) as unknown
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    })
  return new Proxy(real, {
    get(target, property) {
      if (property === 'withSession') return (constraint?: string) => sabotage(target.withSession(constraint))
      const value = Reflect.get(target, property, target) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

const failingLastStatement: WorkerEnv = { ...signedEnv, DB: lastStatementFails(env.DB) }

describe('POST /api/v1/email/events: signatures', () => {
  it('refuses a missing signature header with 401 signature_invalid and records nothing', async ({ expect }) => {
    const email = await subscriber('active')
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const id = `msg_${crypto.randomUUID()}`
      const body = JSON.stringify(resendEvent('email.bounced', [email]))
      const timestamp = nowSeconds()
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(timestamp),
        'webhook-signature': await signWebhook(SECRET, id, timestamp, new TextEncoder().encode(body)),
      }
      delete headers[name]
      const res = await fetchWorker(EVENTS_URL, { method: 'POST', headers, body }, signedEnv)
      const problem = await expectProblem(res, 401, 'signature_invalid')
      expect(problem.detail, name).toContain('webhook-signature')
      expect(await recorded(id)).toEqual([])
    }
    expect(await statusOf(email)).toBe('active')
  })

  it('refuses a wrong secret, a forged signature, an edited body and a signature of another id', async ({ expect }) => {
    const email = await subscriber('active')
    const event = resendEvent('email.bounced', [email])
    const forged = 'v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
    const edited = JSON.stringify(resendEvent('email.bounced', [await subscriber('active')]))
    const id = `msg_${crypto.randomUUID()}`
    const elsewhere = await signWebhook(
      SECRET,
      'msg_other',
      nowSeconds(),
      new TextEncoder().encode(JSON.stringify(event)),
    )
    for (const options of [
      { secret: OTHER_SECRET },
      { signature: forged },
      { signature: 'v1a,c2lnbmVk' },
      { signature: '' },
      { sentBody: edited },
      { id, signature: elsewhere },
    ] satisfies Delivery[]) {
      const problem = await expectProblem(await deliver(event, options), 401, 'signature_invalid')
      expect(problem.detail).not.toContain(SECRET.slice(6))
    }
    expect(await statusOf(email)).toBe('active')
    expect(await recorded(id)).toEqual([])
  })

  it('refuses a timestamp far outside 5 minutes either way, and takes one well inside', async ({ expect }) => {
    const email = await subscriber('active')
    const event = resendEvent('email.bounced', [email])
    for (const offset of [-3_600, -901, 901, 3_600, -86_400 * 365]) {
      const problem = await expectProblem(
        await deliver(event, { timestamp: nowSeconds() + offset }),
        401,
        'signature_invalid',
      )
      expect(problem.detail).toContain('5 minutes')
    }
    expect(await statusOf(email)).toBe('active')
    await expectReceived(await deliver(event, { timestamp: nowSeconds() - 60 }))
    expect(await statusOf(email)).toBe('bounced')
  })

  it('holds the 5-minute window to the second on the worker clock (faked Date)', async ({ expect }) => {
    const email = await subscriber('active')
    const event = resendEvent('email.bounced', [email])
    const signedAt = 1_900_000_000
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime((signedAt + 301) * 1000)
    await expectProblem(await deliver(event, { timestamp: signedAt }), 401, 'signature_invalid')
    vi.setSystemTime((signedAt - 301) * 1000)
    await expectProblem(await deliver(event, { timestamp: signedAt }), 401, 'signature_invalid')
    expect(await statusOf(email)).toBe('active')
    vi.setSystemTime((signedAt + 300) * 1000)
    await expectReceived(await deliver(event, { timestamp: signedAt }))
    expect(await statusOf(email)).toBe('bounced')
  })

  it('checks the signature before the body: an unsigned malformed body is 401, not 400', async () => {
    await expectProblem(await deliver('{"type":', { signature: 'v1,nope' }), 401, 'signature_invalid')
    await expectProblem(await deliver({}, { signature: 'v1,nope' }), 401, 'signature_invalid')
  })
})

describe('POST /api/v1/email/events: malformed input', () => {
  it('answers a signed body that is not JSON 400 validation_failed', async ({ expect }) => {
    const id = `msg_${crypto.randomUUID()}`
    const problem = await expectProblem(await deliver('{"type":', { id }), 400, 'validation_failed')
    expect(problem.errors).toEqual([{ path: '', message: 'is not valid JSON' }])
    expect(await recorded(id)).toEqual([])
  })

  it.for([
    ['no type', { data: { to: ['a@example.com'] } }, 'type'],
    ['an empty type', { type: '', data: {} }, 'type'],
    ['a bounce without recipients', { type: 'email.bounced', data: {} }, 'data.to'],
    ['a bounce without data', { type: 'email.bounced' }, 'data.to'],
    ['a complaint with an empty list', { type: 'email.complained', data: { to: [] } }, 'data.to'],
    ['a bounce whose to is not a list', { type: 'email.bounced', data: { to: 'a@example.com' } }, 'data.to'],
    ['a bounce of 51 recipients', { type: 'email.bounced', data: { to: Array(51).fill('a@example.com') } }, 'data.to'],
  ] as const)('answers %s 400 validation_failed naming %s, recording nothing', async ([, event, path], { expect }) => {
    const id = `msg_${crypto.randomUUID()}`
    const problem = await expectProblem(await deliver(event, { id }), 400, 'validation_failed')
    expect(problem.errors?.map((error) => error.path)).toContain(path)
    expect(await recorded(id)).toEqual([])
  })

  it('answers a body over 64 KiB 413 and a non-JSON type 415', async () => {
    const big = { type: 'email.delivered', data: { to: ['a@example.com'], html: 'x'.repeat(70 * 1024) } }
    await expectProblem(await deliver(big), 413, 'payload_too_large')
    await expectProblem(
      await deliver(resendEvent('email.bounced', ['a@example.com']), { headers: { 'content-type': 'text/plain' } }),
      415,
      'unsupported_media_type',
    )
  })

  it('answers other methods 405 with Allow: POST', async ({ expect }) => {
    const res = await fetchWorker(EVENTS_URL, { method: 'GET' }, signedEnv)
    await expectProblem(res, 405, 'method_not_allowed')
    expect(res.headers.get('allow')).toBe('POST')
  })
})

describe('POST /api/v1/email/events: configuration', () => {
  it('is 404 not_found, like an unknown route, while MAIL_WEBHOOK_SECRET is unset', async ({ expect }) => {
    const email = await subscriber('active')
    const res = await deliver(resendEvent('email.bounced', [email]), { workerEnv: env })
    const problem = await expectProblem(res, 404, 'not_found')
    const unknown = await expectProblem(await api('POST', '/email/nowhere', {}), 404, 'not_found')
    expect(problem.detail).toBe(unknown.detail)
    expect(await statusOf(email)).toBe('active')
  })

  it('answers 500 naming MAIL_WEBHOOK_SECRET, never its value, when it is not a whsec_ secret', async ({ expect }) => {
    const value = 'not-a-webhook-secret-value'
    const res = await deliver({ type: 'email.sent' }, { workerEnv: { ...env, MAIL_WEBHOOK_SECRET: value } })
    const problem = await expectProblem(res, 500, 'internal_error')
    expect(problem.detail).toContain('MAIL_WEBHOOK_SECRET')
    expect(problem.detail).not.toContain(value)
  })
})

describe('after a bounce or a complaint', () => {
  it.for(['email.bounced', 'email.complained'] as const)(
    'after %s, subscribing the address again goes through double opt-in as a new address',
    async (type, { expect }) => {
      const email = await subscriber('active')
      await expectReceived(await deliver(resendEvent(type, [email])))
      const before = (await outboxMessagesTo(email)).length

      const res = await api('POST', '/subscribers', { email })
      expect(res.status).toBe(202)
      expect(await res.json()).toEqual({ status: 'pending' })
      expect(await statusOf(email)).toBe('pending')
      expect(await outboxMessagesTo(email)).toHaveLength(before + 1)

      const confirmed = await api('POST', '/subscribers/confirm', {
        token: await tokenFromEmail(email, 'confirm-subscription'),
      })
      expect(confirmed.status).toBe(200)
      expect(await statusOf(email)).toBe('active')
    },
  )

  it('a confirmation link mailed before the bounce no longer activates the address', async ({ expect }) => {
    const email = uniqueEmail('early')
    expect((await api('POST', '/subscribers', { email })).status).toBe(202)
    await expectReceived(await deliver(resendEvent('email.bounced', [email])))
    const token = await tokenFromEmail(email, 'confirm-subscription')
    await expectProblem(await api('POST', '/subscribers/confirm', { token }), 400, 'token_invalid')
    expect(await statusOf(email)).toBe('bounced')
  })

  it('the unsubscribe link changes nothing: the address stays bounced (never mailed again)', async ({ expect }) => {
    const email = uniqueEmail('stays')
    expect((await api('POST', '/subscribers', { email })).status).toBe(202)
    await expectReceived(await deliver(resendEvent('email.complained', [email])))
    const token = await tokenFromEmail(email, 'unsubscribe')
    const res = await api('POST', '/subscribers/unsubscribe', { token })
    expect(res.status).toBe(200)
    expect(await statusOf(email)).toBe('complained')
  })
})
