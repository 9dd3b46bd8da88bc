import { env } from 'cloudflare:workers'
import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import { consumeOneTimeToken, issueOneTimeToken } from './one-time-tokens'
import type { SubscriberRow, SubscriberStatus } from './schema'
import {
  activateSubscriber,
  deleteSubscriber,
  findSubscriberByEmail,
  listSubscribers,
  markUndeliverable,
  pendingSubscriberStatements,
  subscriberIdByEmail,
  subscribersAfter,
  unsubscribeByTokenHash,
  updateSubscriber,
} from './subscribers'

// What the HTTP tests cannot reach directly: a concurrent subscribe of one address, and each
// status transition an admin's change makes (confirmed_at and unsubscribed_at kept consistent).

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const at = (ms: number): Date => new Date(T0.getTime() + ms)
/** A per-recipient limit no test reaches. */
const NO_LIMIT = { max: 1_000, since: T0 }

async function subscribed(name: string | null = 'Ada', email = `${uniqueName('sub')}@example.com`) {
  const input = { email, name, unsubscribeTokenHash: uniqueName('hash') }
  await db.batch(pendingSubscriberStatements(db, input, T0, NO_LIMIT))
  return (await findSubscriberByEmail(db, email))!
}

async function withStatus(status: SubscriberStatus): Promise<SubscriberRow> {
  const row = await subscribed()
  if (status === 'pending') return row
  const active = (await updateSubscriber(db, row, { status: 'active' }, at(1_000)))!
  return status === 'active' ? active : (await updateSubscriber(db, active, { status }, at(2_000)))!
}

/** The condition of an event not applied yet, and of one applied before. */
const UNAPPLIED = sql`1`
const APPLIED = sql`0`

describe('pendingSubscriberStatements', () => {
  it('inserts a new address as pending; the same address in another case changes nothing but the token hash', async () => {
    const email = `${uniqueName('Race')}@example.com`
    const first = await subscribed('First', email)
    const again = { email: email.toUpperCase(), name: 'Second', unsubscribeTokenHash: uniqueName('hash') }
    await db.batch(pendingSubscriberStatements(db, again, at(1), NO_LIMIT))

    expect(first).toMatchObject({ email, name: 'First', status: 'pending', confirmedAt: null, createdAt: T0 })
    expect(await findSubscriberByEmail(db, email.toUpperCase())).toEqual({
      ...first,
      unsubscribeTokenHash: again.unsubscribeTokenHash,
      updatedAt: at(1),
    })
  })

  it('makes an unsubscribed address pending again: new token hash, no confirmation, the name kept', async () => {
    const gone = await withStatus('unsubscribed')
    const input = { email: gone.email, name: 'Stranger', unsubscribeTokenHash: uniqueName('hash') }

    await db.batch(pendingSubscriberStatements(db, input, at(5_000), NO_LIMIT))

    expect(await findSubscriberByEmail(db, gone.email)).toEqual({
      ...gone,
      status: 'pending',
      confirmedAt: null,
      unsubscribeTokenHash: input.unsubscribeTokenHash,
      updatedAt: at(5_000),
    })
  })

  it('leaves an active address as it is', async () => {
    const active = await withStatus('active')
    const input = { email: active.email, name: 'Stranger', unsubscribeTokenHash: uniqueName('hash') }

    await db.batch(pendingSubscriberStatements(db, input, at(5_000), NO_LIMIT))

    expect(await findSubscriberByEmail(db, active.email)).toEqual(active)
  })

  it('changes nothing, new or known, once the address had its confirmations this window', async () => {
    const fresh = `${uniqueName('limited')}@example.com`
    const limit = { max: 0, since: T0 }
    await db.batch(pendingSubscriberStatements(db, { email: fresh, name: null, unsubscribeTokenHash: 'h' }, T0, limit))
    expect(await findSubscriberByEmail(db, fresh)).toBeUndefined()

    const gone = await withStatus('unsubscribed')
    const input = { email: gone.email, name: null, unsubscribeTokenHash: uniqueName('hash') }
    await db.batch(pendingSubscriberStatements(db, input, at(5_000), limit))
    expect(await findSubscriberByEmail(db, gone.email)).toEqual(gone)
  })
})

describe('activateSubscriber', () => {
  it('activates the subscriber of a live confirmation token, clearing an unsubscription', async () => {
    const row = await withStatus('unsubscribed')
    const { token, insert } = await issueOneTimeToken(
      db,
      'subscription_confirmation',
      { subscriberId: subscriberIdByEmail(row.email), email: row.email },
      T0,
    )
    await db.batch([insert])

    await consumeOneTimeToken(db, 'subscription_confirmation', token, at(9_000), (live) => [
      activateSubscriber(db, live, at(9_000)),
    ])

    expect(await findSubscriberByEmail(db, row.email)).toMatchObject({
      status: 'active',
      confirmedAt: at(9_000),
      unsubscribedAt: null,
    })
  })
})

describe('activateSubscriber after a bounce or a complaint', () => {
  it.each(['bounced', 'complained'] as const)('leaves a %s subscriber as it is, spending the token', async (status) => {
    const row = await withStatus('pending')
    const { token, insert } = await issueOneTimeToken(
      db,
      'subscription_confirmation',
      { subscriberId: subscriberIdByEmail(row.email), email: row.email },
      T0,
    )
    await db.batch([insert])
    const marked = (await updateSubscriber(db, row, { status }, at(1_000)))!

    await consumeOneTimeToken(db, 'subscription_confirmation', token, at(9_000), (live) => [
      activateSubscriber(db, live, at(9_000)),
    ])

    expect(await findSubscriberByEmail(db, row.email)).toEqual(marked)
    await expect(consumeOneTimeToken(db, 'subscription_confirmation', token, at(9_500))).rejects.toMatchObject({
      code: 'token_invalid',
    })
  })
})

describe('unsubscribeByTokenHash', () => {
  it.each(['bounced', 'complained'] as const)('finds a %s subscriber and leaves it as it is', async (status) => {
    const row = await withStatus(status)
    expect(await unsubscribeByTokenHash(db, row.unsubscribeTokenHash, at(5_000))).toBe(true)
    expect(await findSubscriberByEmail(db, row.email)).toEqual({ ...row, updatedAt: at(5_000) })
  })

  it('unsubscribes the holder of the hash, keeping the first unsubscription time; false for an unknown hash', async () => {
    const row = await withStatus('active')

    expect(await unsubscribeByTokenHash(db, row.unsubscribeTokenHash, at(5_000))).toBe(true)
    expect(await unsubscribeByTokenHash(db, row.unsubscribeTokenHash, at(6_000))).toBe(true)
    expect(await unsubscribeByTokenHash(db, uniqueName('unknown'), at(6_000))).toBe(false)

    expect(await findSubscriberByEmail(db, row.email)).toMatchObject({
      status: 'unsubscribed',
      unsubscribedAt: at(5_000),
      updatedAt: at(6_000),
    })
  })
})

describe('markUndeliverable', () => {
  it.each([
    ['pending', 'bounced', 'bounced'],
    ['active', 'bounced', 'bounced'],
    ['unsubscribed', 'bounced', 'bounced'],
    ['bounced', 'bounced', 'bounced'],
    ['complained', 'bounced', 'complained'],
    ['pending', 'complained', 'complained'],
    ['active', 'complained', 'complained'],
    ['unsubscribed', 'complained', 'complained'],
    ['bounced', 'complained', 'complained'],
    ['complained', 'complained', 'complained'],
  ] as const)('%s + %s → %s, the rest of the row kept', async (from, event, to) => {
    const row = await withStatus(from)
    await db.batch([markUndeliverable(db, [row.email], event, at(9_000), UNAPPLIED)])
    const changed = from !== to
    expect(await findSubscriberByEmail(db, row.email)).toEqual({
      ...row,
      status: to,
      updatedAt: changed ? at(9_000) : row.updatedAt,
    })
  })

  it('matches every address given, in any case (SQLite lower(), as the unique index), and nobody else', async () => {
    const first = await withStatus('active')
    const second = await withStatus('active')
    const bystander = await withStatus('active')
    await db.batch([
      markUndeliverable(db, [first.email.toUpperCase(), second.email, 'nobody@example.com'], 'bounced', T0, UNAPPLIED),
    ])
    expect((await findSubscriberByEmail(db, first.email))?.status).toBe('bounced')
    expect((await findSubscriberByEmail(db, second.email))?.status).toBe('bounced')
    expect((await findSubscriberByEmail(db, bystander.email))?.status).toBe('active')
  })

  it('changes nothing when its condition is false (the event was applied before)', async () => {
    const row = await withStatus('active')
    await db.batch([markUndeliverable(db, [row.email], 'complained', at(9_000), APPLIED)])
    expect(await findSubscriberByEmail(db, row.email)).toEqual(row)
  })
})

describe('updateSubscriber', () => {
  it.each([
    ['pending', 'active', { confirmedAt: at(9_000), unsubscribedAt: null }],
    ['unsubscribed', 'active', { confirmedAt: at(1_000), unsubscribedAt: null }],
    ['active', 'unsubscribed', { confirmedAt: at(1_000), unsubscribedAt: at(9_000) }],
    ['unsubscribed', 'pending', { confirmedAt: at(1_000), unsubscribedAt: null }],
    ['pending', 'unsubscribed', { confirmedAt: null, unsubscribedAt: at(9_000) }],
  ] as const)('%s → %s keeps confirmed_at and unsubscribed_at consistent', async (from, to, expected) => {
    const row = await withStatus(from)
    expect(await updateSubscriber(db, row, { status: to }, at(9_000))).toEqual({
      ...row,
      status: to,
      ...expected,
      updatedAt: at(9_000),
    })
  })

  it('changes nothing but updatedAt when the status stays, and sets or clears the name alone', async () => {
    const row = await withStatus('unsubscribed')
    expect(await updateSubscriber(db, row, { status: 'unsubscribed' }, at(9_000))).toEqual({
      ...row,
      updatedAt: at(9_000),
    })
    expect(await updateSubscriber(db, row, { name: null }, at(9_500))).toEqual({
      ...row,
      name: null,
      updatedAt: at(9_500),
    })
  })

  it('answers undefined for a subscriber deleted meanwhile', async () => {
    const row = await subscribed()
    await deleteSubscriber(db, row.id)
    expect(await updateSubscriber(db, row, { name: 'x', status: 'active' }, at(1))).toBeUndefined()
    expect(await findSubscriberByEmail(db, row.email)).toBeUndefined()
  })
})

describe('listSubscribers and subscribersAfter', () => {
  it('search any case in the email or the name, % and _ literally, with the status filter', async () => {
    const tag = uniqueName('Tag')
    const byEmail = await subscribed(null, `${tag}@example.com`)
    const byName = await subscribed(`Name ${tag.toUpperCase()}`)
    await subscribed('Someone else')
    const window = { position: null, limit: 50 }

    const found = await listSubscribers(db, { search: tag.toLowerCase() }, window)
    expect(found.map((row) => row.id).sort()).toEqual([byEmail.id, byName.id].sort())
    expect(await listSubscribers(db, { search: `${tag.slice(0, 3)}%` }, window)).toEqual([])
    expect(await listSubscribers(db, { search: tag, status: 'active' }, window)).toEqual([])
  })

  it('subscribersAfter reads the table in id order after the last id', async () => {
    const rows = [await subscribed(), await subscribed(), await subscribed()]
    const chunk = await subscribersAfter(db, rows[0]!.id, 2)
    expect(chunk.map((row) => row.id)).toEqual([rows[1]!.id, rows[2]!.id])
  })
})
