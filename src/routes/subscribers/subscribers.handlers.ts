import type { SubscriberRow } from '../../db/schema'
import type { Db } from '../../db/client'
import { createdAtEdge } from '../../db/keyset'
import { consumeOneTimeToken, issueTokenForPendingSubscriber } from '../../db/one-time-tokens'
import {
  activateSubscriber,
  deleteSubscriber,
  findSubscriber,
  listSubscribers,
  pendingSubscriberStatements,
  subscribersAfter,
  unsubscribeByTokenHash,
  updateSubscriber,
} from '../../db/subscribers'
import { recipientLimit } from '../../email/account-emails'
import { LINK_PATHS, linkTo, subscriptionConfirmationMessage } from '../../email/messages'
import { PRIVATE_NO_STORE } from '../../http/conditional-get'
import { ApiError, notFound } from '../../lib/api-error'
import { csvRecord } from '../../lib/csv'
import { derivedHmacKey, sha256Base64Url } from '../../lib/hmac'
import { parseId } from '../../lib/ids'
import { isWellFormedUnsubscribeToken, unsubscribeTokenFor } from '../../lib/unsubscribe-tokens'
import { limitByAccount } from '../../middleware/rate-limit'
import { createRouter, mailerOf } from '../../router'
import type { AdminEnv, AppRouteHandler } from '../../router'
import { readPageRequest, toPage } from '../pagination'
import * as routes from './subscribers.routes'

const EXPORT_CHUNK_ROWS = 500

// Stands for the subscriber's greeting (" " and the stored name, or nothing) in the confirmation
// email, which the database fills from the row (control characters are in no template or name).
const GREETING_NAME = '\u0001name\u0001'

export const subscribe: AppRouteHandler<typeof routes.subscribe> = async (c) => {
  const { email, name } = c.req.valid('json')
  await limitByAccount(c, 'subscribe', email)
  const { db, config } = c.var
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const now = new Date()
  const limit = recipientLimit(now)
  const unsubscribeToken = await unsubscribeTokenFor(email, await derivedHmacKey(config.tokens.secret, 'unsubscribe'))
  const subscriber = { email, name: name ?? null, unsubscribeTokenHash: await sha256Base64Url(unsubscribeToken) }
  const { token, tokenHash, insert } = await issueTokenForPendingSubscriber(db, email, now, limit)
  // The greeting is the name the row holds: a stranger re-posting the address can neither rename
  // its subscriber nor put new text into the mail sent to it.
  const { subject, text, headers } = subscriptionConfirmationMessage(
    email,
    GREETING_NAME,
    linkTo(config.publicBaseUrl, LINK_PATHS.subscriptionConfirmation, token),
    linkTo(config.publicBaseUrl, LINK_PATHS.unsubscribe, unsubscribeToken),
  )
  const message = { subject, text, headers, fill: { [` ${GREETING_NAME}`]: 'subscriberGreeting' as const } }
  // One batch, whatever the address's state: an active one stays active and gets no email, and an
  // address mailed 3 times this hour gets no more (no mail bombing). The answer, and its round
  // trips, are the same either way.
  await db.batch([
    ...pendingSubscriberStatements(db, subscriber, now, limit),
    insert,
    mailer.queueForToken(db, message, tokenHash, now),
  ])
  await mailer.deliverSoon()
  return c.json({ status: 'pending' as const }, 202)
}

export const confirm: AppRouteHandler<typeof routes.confirm> = async (c) => {
  const { db } = c.var
  const now = new Date()
  const owner = await consumeOneTimeToken(db, 'subscription_confirmation', c.req.valid('json').token, now, (live) => [
    activateSubscriber(db, live, now),
  ])
  const subscriber = await findSubscriberOr404(db, owner.subscriberId ?? 0)
  // The address bounced or complained after the link was mailed: the link is spent, nothing changed.
  if (subscriber.status !== 'active') throw new ApiError(400, 'token_invalid', 'This link is no longer valid.')
  return c.json({ email: subscriber.email, status: 'active' as const }, 200)
}

export const unsubscribe: AppRouteHandler<typeof routes.unsubscribe> = async (c) => {
  const token = unsubscribeTokenOf(c.req.valid('json'), c.req.valid('query').token)
  const invalid = new ApiError(400, 'token_invalid', 'This unsubscribe link is invalid.')
  if (!isWellFormedUnsubscribeToken(token)) throw invalid
  if (!(await unsubscribeByTokenHash(c.get('db'), await sha256Base64Url(token), new Date()))) throw invalid
  return c.json({ status: 'unsubscribed' as const }, 200)
}

export const unsubscribeLink: AppRouteHandler<typeof routes.unsubscribeLink> = () => {
  throw new ApiError(
    405,
    'method_not_allowed',
    'Nothing was changed: a GET never unsubscribes. Mail clients POST List-Unsubscribe=One-Click to this URL; people use the unsubscribe link in the email.',
    { headers: { Allow: 'POST' } },
  )
}

/**
 * The token of an unsubscribe request: the body's (the app's JSON), or else the URL's when the
 * body is the one-click form. Either missing → 400 naming what to send.
 */
function unsubscribeTokenOf(
  body: { token?: string | undefined; [routes.ONE_CLICK_FIELD]?: 'One-Click' | undefined },
  query: string | undefined,
): string {
  if (body.token !== undefined) return body.token
  if (query === undefined) throw missing('token')
  if (body[routes.ONE_CLICK_FIELD] === undefined) throw missing(routes.ONE_CLICK_FIELD)
  return query
}

function missing(field: string): ApiError {
  return new ApiError(400, 'validation_failed', `Invalid or missing: ${field}.`, {
    errors: [{ path: field, message: 'is required' }],
  })
}

export const list: AppRouteHandler<typeof routes.list, AdminEnv> = async (c) => {
  const { status, q, ...pagination } = c.req.valid('query')
  const page = await readPageRequest(c.req.url, pagination, c.get('config'))
  const rows = await listSubscribers(c.get('db'), { status, search: q }, page)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(await toPage(rows, page, createdAtEdge, routes.toSubscriberView), 200)
}

export const exportCsv: AppRouteHandler<typeof routes.exportCsv, AdminEnv> = (c) => {
  const db = c.get('db')
  const encoder = new TextEncoder()
  let lastId = 0
  let headerSent = false
  // Pulls one chunk of rows per read: memory stays constant however many subscribers there are.
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!headerSent) {
        headerSent = true
        controller.enqueue(encoder.encode(EXPORT_HEADER_ROW))
        return
      }
      const rows = await subscribersAfter(db, lastId, EXPORT_CHUNK_ROWS)
      for (const row of rows) {
        const view = routes.toSubscriberView(row)
        controller.enqueue(
          encoder.encode(csvRecord([view.id, view.email, view.name, view.status, view.created_at, view.confirmed_at])),
        )
      }
      if (rows.length < EXPORT_CHUNK_ROWS) controller.close()
      else lastId = rows[rows.length - 1]!.id
    },
  })
  return c.body(body, 200, {
    'Content-Type': 'text/csv; charset=utf-8',
    'Content-Disposition': 'attachment; filename="subscribers.csv"',
    'Cache-Control': PRIVATE_NO_STORE,
  })
}

export const get: AppRouteHandler<typeof routes.get, AdminEnv> = async (c) => {
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(routes.toSubscriberView(await findSubscriberParam(c.get('db'), c.req.valid('param').id)), 200)
}

export const update: AppRouteHandler<typeof routes.update, AdminEnv> = async (c) => {
  const subscriber = await findSubscriberParam(c.get('db'), c.req.valid('param').id)
  const saved = await updateSubscriber(c.get('db'), subscriber, c.req.valid('json'), new Date())
  if (saved === undefined) throw notFound('subscriber')
  return c.json(routes.toSubscriberView(saved), 200)
}

export const remove: AppRouteHandler<typeof routes.remove, AdminEnv> = async (c) => {
  const subscriber = await findSubscriberParam(c.get('db'), c.req.valid('param').id)
  await deleteSubscriber(c.get('db'), subscriber.id)
  return c.body(null, 204)
}

async function findSubscriberOr404(db: Db, id: number): Promise<SubscriberRow> {
  const subscriber = await findSubscriber(db, id)
  if (subscriber === undefined) throw notFound('subscriber')
  return subscriber
}

function findSubscriberParam(db: Db, rawId: string): Promise<SubscriberRow> {
  const id = parseId(rawId)
  if (id === null) throw notFound('subscriber')
  return findSubscriberOr404(db, id)
}

// The names hold no separator, so they go bare: the first line reads the same to a CSV parser and
// to a client that splits it on commas. Every value after it is quoted (csvRecord).
const EXPORT_HEADER_ROW = 'id,email,name,status,created_at,confirmed_at\r\n'

export const subscribersRouter = createRouter()
  .openapi(routes.subscribe, subscribe)
  .openapi(routes.confirm, confirm)
  .openapi(routes.unsubscribe, unsubscribe)
  .openapi(routes.unsubscribeLink, unsubscribeLink)
  .openapi(routes.list, list)
  .openapi(routes.exportCsv, exportCsv)
  .openapi(routes.get, get)
  .openapi(routes.update, update)
  .openapi(routes.remove, remove)
