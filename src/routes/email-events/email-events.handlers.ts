import { emailEventUnrecorded, recordEmailEvent } from '../../db/email-events'
import { markUndeliverable } from '../../db/subscribers'
import { createRouter } from '../../router'
import type { AppEnv, AppRouteHandler } from '../../router'
import * as routes from './email-events.routes'
import type { WebhookVariables } from './email-events.signature'

interface WebhookEnv extends AppEnv {
  Variables: AppEnv['Variables'] & WebhookVariables
}

export const receive: AppRouteHandler<typeof routes.receive, WebhookEnv> = async (c) => {
  const event = c.req.valid('json')
  const { db } = c.var
  const webhookId = c.get('webhookId')
  const now = new Date()
  const effect = routes.effectOf(event)
  const addresses = (effect?.recipients ?? []).map(bareAddress)
  // One batch: the status change is applied only while the event is unrecorded, and recorded in
  // the same transaction, so a redelivery (or a retry after a failure) applies it exactly once.
  // Unknown addresses change nothing and answer the same.
  const record = recordEmailEvent(db, { webhookId, type: event.type, receivedAt: now })
  const change =
    effect === undefined || !isNonEmpty(addresses)
      ? undefined
      : markUndeliverable(db, addresses, effect.status, now, emailEventUnrecorded(webhookId))
  await db.batch(change === undefined ? [record] : [change, record])
  return c.json({ status: 'received' as const }, 200)
}

/** `Ada <ada@example.com>` → `ada@example.com`; a bare address as it is. */
function bareAddress(recipient: string): string {
  return /<([^<>]+)>$/.exec(recipient)?.[1]?.trim() ?? recipient
}

function isNonEmpty<T>(list: T[]): list is [T, ...T[]] {
  return list.length > 0
}

export const emailEventsRouter = createRouter().openapi(routes.receive, receive)
