import { env } from 'cloudflare:workers'
import { eq, inArray } from 'drizzle-orm'
import { afterAll, describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import { claimMessage, dueMessageIds, insertOutboxMessage, markAttemptFailed, markSent } from './outbox'
import { emailOutbox } from './schema'
import type { OutboxRow } from './schema'

// Far in the future: the drains other requests run (at the real time) never find these messages
// due, and other tests' messages, due long before, are filtered out by id.
const db = createDb({ DB: env.DB })
const T0 = new Date('2200-01-01T00:00:00.000Z')
const MINUTE = 60_000
const at = (ms: number): Date => new Date(T0.getTime() + ms)
const mine: number[] = []

/** Queues a message at `now` and returns its row. */
async function queued(now: Date = T0): Promise<OutboxRow> {
  const to = `${uniqueName('outbox')}@example.com`
  await db.batch([insertOutboxMessage(db, { to, subject: `Hello ${to}`, text: 'Hi', headers: { 'X-Test': to } }, now)])
  const row = await db.query.emailOutbox.findFirst({ where: eq(emailOutbox.recipient, to) })
  mine.push(row!.id)
  return row!
}

async function reload(row: OutboxRow): Promise<OutboxRow> {
  return (await db.query.emailOutbox.findFirst({ where: eq(emailOutbox.id, row.id) }))!
}

/** Of the ids due at `now`, those of these rows, in the order given. */
async function dueAmong(rows: OutboxRow[], now: Date): Promise<number[]> {
  const ids = new Set(rows.map((row) => row.id))
  return (await dueMessageIds(db, now, 10_000)).filter((id) => ids.has(id))
}

afterAll(async () => {
  if (mine.length > 0) await db.delete(emailOutbox).where(inArray(emailOutbox.id, mine))
})

describe('insertOutboxMessage', () => {
  it('queues the message pending, due at once, headers as JSON, no attempt yet', async () => {
    const row = await queued()
    expect(row).toMatchObject({
      status: 'pending',
      attempts: 0,
      nextAttemptAt: T0,
      createdAt: T0,
      lastError: null,
      sentAt: null,
      text: 'Hi',
    })
    expect(JSON.parse(row.headers)).toEqual({ 'X-Test': row.recipient })
  })
})

describe('dueMessageIds', () => {
  it('gives the pending messages due by `now`, oldest due first, and not the later ones', async () => {
    const second = await queued(at(2 * MINUTE))
    const first = await queued(at(MINUTE))
    const later = await queued(at(10 * MINUTE))

    expect(await dueAmong([first, second, later], at(5 * MINUTE))).toEqual([first.id, second.id])
    expect(await dueAmong([first, second, later], at(10 * MINUTE))).toEqual([first.id, second.id, later.id])
  })

  it('gives a sending message once its lease ran out, never a sent or failed one', async () => {
    const leased = await queued()
    const sent = await queued()
    const failed = await queued()
    const leasedRow = (await claimMessage(db, leased.id, T0, at(MINUTE)))!
    await markSent(db, (await claimMessage(db, sent.id, T0, at(MINUTE)))!, T0)
    await markAttemptFailed(db, (await claimMessage(db, failed.id, T0, at(MINUTE)))!, {
      error: 'rejected',
      gaveUp: true,
      nextAttemptAt: T0,
    })

    expect(await dueAmong([leased, sent, failed], at(MINUTE - 1))).toEqual([])
    expect(await dueAmong([leased, sent, failed], at(MINUTE))).toEqual([leasedRow.id])
  })

  it('gives at most `limit` ids', async () => {
    await queued()
    await queued()
    expect(await dueMessageIds(db, T0, 1)).toHaveLength(1)
  })
})

describe('claimMessage', () => {
  it('leases a due message until leaseEnds and counts the attempt', async () => {
    const row = await queued()
    const claimed = await claimMessage(db, row.id, at(1), at(MINUTE))
    expect(claimed).toEqual({ ...row, status: 'sending', attempts: 1, nextAttemptAt: at(MINUTE) })
    expect(await reload(row)).toEqual(claimed)
  })

  it('of two claims of one message, one wins; a claim within the lease gets nothing', async () => {
    const row = await queued()
    const claims = await Promise.all([1, 2].map(() => claimMessage(db, row.id, T0, at(MINUTE))))
    expect(claims.filter((claim) => claim !== undefined)).toHaveLength(1)
    expect(await claimMessage(db, row.id, at(MINUTE - 1), at(2 * MINUTE))).toBeUndefined()
    expect((await reload(row)).attempts).toBe(1)
  })

  it('re-claims a message whose lease ran out, counting another attempt', async () => {
    const row = await queued()
    await claimMessage(db, row.id, T0, at(MINUTE))
    const again = await claimMessage(db, row.id, at(MINUTE), at(2 * MINUTE))
    expect(again).toMatchObject({ status: 'sending', attempts: 2, nextAttemptAt: at(2 * MINUTE) })
  })

  it('gets nothing for a message not yet due, sent, or unknown', async () => {
    const notDue = await queued(at(MINUTE))
    const sent = await queued()
    await markSent(db, (await claimMessage(db, sent.id, T0, at(MINUTE)))!, T0)

    expect(await claimMessage(db, notDue.id, at(MINUTE - 1), at(2 * MINUTE))).toBeUndefined()
    expect(await claimMessage(db, sent.id, at(10 * MINUTE), at(11 * MINUTE))).toBeUndefined()
    expect(await claimMessage(db, 2_000_000_000, at(10 * MINUTE), at(11 * MINUTE))).toBeUndefined()
  })
})

describe('markSent and markAttemptFailed: only the lease holder settles', () => {
  it('markSent settles the message held', async () => {
    const row = await queued()
    const held = (await claimMessage(db, row.id, T0, at(MINUTE)))!
    await markSent(db, held, at(1_000))
    expect(await reload(row)).toMatchObject({ status: 'sent', sentAt: at(1_000), lastError: null, attempts: 1 })
  })

  it('a sender whose lease ran out and was re-claimed settles nothing; the new holder does', async () => {
    const row = await queued()
    const stale = (await claimMessage(db, row.id, T0, at(MINUTE)))!
    const current = (await claimMessage(db, row.id, at(MINUTE), at(2 * MINUTE)))!

    await markSent(db, stale, at(MINUTE + 1))
    await markAttemptFailed(db, stale, { error: 'late failure', gaveUp: true, nextAttemptAt: at(MINUTE + 1) })
    expect(await reload(row)).toEqual(current)

    await markAttemptFailed(db, current, { error: 'timeout', gaveUp: false, nextAttemptAt: at(5 * MINUTE) })
    expect(await reload(row)).toMatchObject({
      status: 'pending',
      attempts: 2,
      lastError: 'timeout',
      nextAttemptAt: at(5 * MINUTE),
    })
  })

  it('markAttemptFailed gives up for good (failed) or schedules a retry (pending, due at nextAttemptAt)', async () => {
    const retried = await queued()
    const abandoned = await queued()
    await markAttemptFailed(db, (await claimMessage(db, retried.id, T0, at(MINUTE)))!, {
      error: 'busy',
      gaveUp: false,
      nextAttemptAt: at(3 * MINUTE),
    })
    await markAttemptFailed(db, (await claimMessage(db, abandoned.id, T0, at(MINUTE)))!, {
      error: 'rejected',
      gaveUp: true,
      nextAttemptAt: at(3 * MINUTE),
    })

    expect(await reload(retried)).toMatchObject({ status: 'pending', lastError: 'busy' })
    expect(await reload(abandoned)).toMatchObject({ status: 'failed', lastError: 'rejected' })
    expect(await dueAmong([retried, abandoned], at(3 * MINUTE - 1))).toEqual([])
    expect(await dueAmong([retried, abandoned], at(3 * MINUTE))).toEqual([retried.id])
  })
})
