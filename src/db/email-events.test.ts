import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { sql } from 'drizzle-orm'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import { emailEventUnrecorded, pruneEmailEvents, recordEmailEvent } from './email-events'
import { findSubscriberByEmail, markUndeliverable, pendingSubscriberStatements } from './subscribers'

// The ledger of provider events: an event's effect guarded by emailEventUnrecorded() and batched
// before recordEmailEvent() lands once, however often the event is delivered.

const db = createDb({ DB: env.DB })
// Long before anything the other suites record: the prune below deletes only this file's rows.
const T0 = new Date('2001-03-01T10:00:00.000Z')
const at = (ms: number): Date => new Date(T0.getTime() + ms)

async function subscriberEmail(): Promise<string> {
  const email = `${uniqueName('ledger')}@example.com`
  const input = { email, name: null, unsubscribeTokenHash: uniqueName('hash') }
  await db.batch(pendingSubscriberStatements(db, input, T0, { max: 1_000, since: T0 }))
  return email
}

async function recordedAt(webhookId: string): Promise<number[]> {
  const { results } = await env.DB.prepare('SELECT received_at FROM email_events WHERE webhook_id = ?')
    .bind(webhookId)
    .all<{ received_at: number }>()
  return results.map((row) => row.received_at)
}

describe('recordEmailEvent and emailEventUnrecorded', () => {
  it('apply the effect of the first delivery only, and keep the first receipt', async () => {
    const email = await subscriberEmail()
    const webhookId = uniqueName('msg')
    const deliver = (now: Date) =>
      db.batch([
        markUndeliverable(db, [email], 'bounced', now, emailEventUnrecorded(webhookId)),
        recordEmailEvent(db, { webhookId, type: 'email.bounced', receivedAt: now }),
      ])

    await deliver(at(1_000))
    await db.run(sql`update subscribers set status = 'active' where email = ${email}`)
    await deliver(at(2_000))

    expect((await findSubscriberByEmail(db, email))?.status).toBe('active')
    expect(await recordedAt(webhookId)).toEqual([at(1_000).getTime()])
  })
})

describe('pruneEmailEvents', () => {
  it('deletes the events received before the cutoff, and only those', async () => {
    const old = uniqueName('old')
    const recent = uniqueName('recent')
    await db.batch([
      recordEmailEvent(db, { webhookId: old, type: 'email.delivered', receivedAt: T0 }),
      recordEmailEvent(db, { webhookId: recent, type: 'email.delivered', receivedAt: at(10_000) }),
    ])
    await db.batch([pruneEmailEvents(db, at(5_000))])
    expect(await recordedAt(old)).toEqual([])
    expect(await recordedAt(recent)).toEqual([at(10_000).getTime()])
  })
})
