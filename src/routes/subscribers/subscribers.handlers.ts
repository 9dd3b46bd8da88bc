import { and, asc, eq, gt, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import { subscribers } from '../../db/schema'
import type { SubscriberRow } from '../../db/schema'
import { consumeOneTimeToken, issueOneTimeToken } from '../../db/one-time-tokens'
import { deliverSoon } from '../../email/account-emails'
import { LINK_PATHS, linkTo, subscriptionConfirmationMessage } from '../../email/messages'
import { queueEmail } from '../../email/outbox'
import { ApiError, notFound } from '../../errors'
import { csvRecord } from '../../lib/csv'
import { derivedHmacKey, sha256Base64Url } from '../../lib/hmac'
import { isWellFormedUnsubscribeToken, unsubscribeTokenFor } from '../../lib/unsubscribe-tokens'
import type { AdminEnv } from '../../middleware/authenticate'
import { limitByAccount } from '../../middleware/rate-limit'
import { createRouter } from '../../router'
import type { AppRouteHandler, Db } from '../../router'
import { PRIVATE_NO_STORE } from '../http-caching'
import { keysetCondition, keysetOrder, readPageRequest, toPage } from '../pagination'
import type { Keyset } from '../pagination'
import { parseId } from '../params'
import * as routes from './subscribers.routes'

const NEWEST_FIRST: Keyset = { sortColumn: subscribers.createdAt, idColumn: subscribers.id, order: 'desc' }
const EXPORT_CHUNK_ROWS = 500

const byEmail = (email: string): SQL => sql`lower(${subscribers.email}) = lower(${email})`

export const subscribe: AppRouteHandler<typeof routes.subscribe> = async (c) => {
  const { email, name } = c.req.valid('json')
  await limitByAccount(c, 'subscribe', email)
  const { db, config } = c.var
  const existing = await db.query.subscribers.findFirst({ where: byEmail(email) })
  // An active address stays active and gets no email; the answer is the same either way.
  if (existing?.status !== 'active') {
    const now = new Date()
    const unsubscribeToken = await unsubscribeTokenFor(email, await derivedHmacKey(config.tokens.secret, 'unsubscribe'))
    const saveSubscriber =
      existing === undefined
        ? db
            .insert(subscribers)
            .values({
              email,
              name: name ?? null,
              status: 'pending',
              createdAt: now,
              updatedAt: now,
              unsubscribeTokenHash: await sha256Base64Url(unsubscribeToken),
            })
            .onConflictDoNothing()
        : db
            .update(subscribers)
            .set({ status: 'pending', name: name ?? existing.name, confirmedAt: null, updatedAt: now })
            .where(eq(subscribers.id, existing.id))
    const subscriberId = existing?.id ?? sql`(select ${subscribers.id} from ${subscribers} where ${byEmail(email)})`
    const { token, insert } = await issueOneTimeToken(db, 'subscription_confirmation', { subscriberId, email }, now)
    const message = subscriptionConfirmationMessage(
      email,
      name ?? existing?.name ?? null,
      linkTo(config.publicBaseUrl, LINK_PATHS.subscriptionConfirmation, token),
      linkTo(config.publicBaseUrl, LINK_PATHS.unsubscribe, unsubscribeToken),
    )
    await db.batch([saveSubscriber, insert, queueEmail(db, message, now)])
    deliverSoon(c)
  }
  return c.json({ status: 'pending' as const }, 202)
}

export const confirm: AppRouteHandler<typeof routes.confirm> = async (c) => {
  const { db } = c.var
  const now = new Date()
  const owner = await consumeOneTimeToken(db, 'subscription_confirmation', c.req.valid('json').token, now, (live) => [
    db
      .update(subscribers)
      .set({ status: 'active', confirmedAt: now, unsubscribedAt: null, updatedAt: now })
      .where(eq(subscribers.id, live.subscriberId)),
  ])
  const subscriber = await findSubscriber(db, owner.subscriberId ?? 0)
  return c.json({ email: subscriber.email, status: 'active' as const }, 200)
}

export const unsubscribe: AppRouteHandler<typeof routes.unsubscribe> = async (c) => {
  const { token } = c.req.valid('json')
  const invalid = new ApiError(400, 'token_invalid', 'This unsubscribe link is invalid.')
  if (!isWellFormedUnsubscribeToken(token)) throw invalid
  const now = new Date()
  const [row] = await c.var.db
    .update(subscribers)
    .set({ status: 'unsubscribed', unsubscribedAt: sql`coalesce(${subscribers.unsubscribedAt}, ${now.getTime()})`, updatedAt: now })
    .where(eq(subscribers.unsubscribeTokenHash, await sha256Base64Url(token)))
    .returning({ id: subscribers.id })
  if (row === undefined) throw invalid
  return c.json({ status: 'unsubscribed' as const }, 200)
}

export const list: AppRouteHandler<typeof routes.list, AdminEnv> = async (c) => {
  const { status, q, ...pagination } = c.req.valid('query')
  const page = await readPageRequest(c.req.url, pagination, c.var.config)
  // lower() on both sides: SQLite folds only A–Z, so the term must be folded the same way.
  const search = q
  const rows = await c.var.db
    .select()
    .from(subscribers)
    .where(
      and(
        keysetCondition(NEWEST_FIRST, page),
        status === undefined ? undefined : eq(subscribers.status, status),
        // instr() instead of LIKE: no wildcard characters to escape in the admin's input.
        search === undefined
          ? undefined
          : sql`(instr(lower(${subscribers.email}), lower(${search})) > 0 or instr(lower(coalesce(${subscribers.name}, '')), lower(${search})) > 0)`,
      ),
    )
    .orderBy(...keysetOrder(NEWEST_FIRST, page))
    .limit(page.limit + 1)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(await toPage(rows, page, (row) => ({ key: row.createdAt.getTime(), id: row.id }), routes.toSubscriberView), 200)
}

export const exportCsv: AppRouteHandler<typeof routes.exportCsv, AdminEnv> = (c) => {
  const db = c.var.db
  const encoder = new TextEncoder()
  let lastId = 0
  let headerSent = false
  // Pulls one chunk of rows per read: memory stays constant however many subscribers there are.
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!headerSent) {
        headerSent = true
        controller.enqueue(encoder.encode(csvRecord(['id', 'email', 'name', 'status', 'created_at', 'confirmed_at'])))
        return
      }
      const rows = await db
        .select()
        .from(subscribers)
        .where(gt(subscribers.id, lastId))
        .orderBy(asc(subscribers.id))
        .limit(EXPORT_CHUNK_ROWS)
      for (const row of rows) {
        const view = routes.toSubscriberView(row)
        controller.enqueue(encoder.encode(csvRecord([view.id, view.email, view.name, view.status, view.created_at, view.confirmed_at])))
      }
      if (rows.length < EXPORT_CHUNK_ROWS) controller.close()
      else lastId = rows[rows.length - 1]!.id
    },
  })
  return c.body(body, 200, {
    'Content-Type': 'text/csv; charset=utf-8',
    'Content-Disposition': 'attachment; filename="subscribers.csv"',
    'Cache-Control': PRIVATE_NO_STORE,
  }) as never
}

export const get: AppRouteHandler<typeof routes.get, AdminEnv> = async (c) => {
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(routes.toSubscriberView(await findSubscriberParam(c.var.db, c.req.valid('param').id)), 200)
}

export const update: AppRouteHandler<typeof routes.update, AdminEnv> = async (c) => {
  const subscriber = await findSubscriberParam(c.var.db, c.req.valid('param').id)
  const { name, status } = c.req.valid('json')
  const now = new Date()
  const statusChange =
    status === undefined || status === subscriber.status
      ? {}
      : {
          status,
          confirmedAt: status === 'active' ? (subscriber.confirmedAt ?? now) : subscriber.confirmedAt,
          unsubscribedAt: status === 'unsubscribed' ? now : null,
        }
  const [saved] = await c.var.db
    .update(subscribers)
    .set({ ...(name === undefined ? {} : { name }), ...statusChange, updatedAt: now })
    .where(eq(subscribers.id, subscriber.id))
    .returning()
  if (saved === undefined) throw notFound('subscriber')
  return c.json(routes.toSubscriberView(saved), 200)
}

export const remove: AppRouteHandler<typeof routes.remove, AdminEnv> = async (c) => {
  const subscriber = await findSubscriberParam(c.var.db, c.req.valid('param').id)
  await c.var.db.delete(subscribers).where(eq(subscribers.id, subscriber.id))
  return c.body(null, 204)
}

async function findSubscriber(db: Db, id: number): Promise<SubscriberRow> {
  const subscriber = await db.query.subscribers.findFirst({ where: eq(subscribers.id, id) })
  if (subscriber === undefined) throw notFound('subscriber')
  return subscriber
}

function findSubscriberParam(db: Db, rawId: string): Promise<SubscriberRow> {
  const id = parseId(rawId)
  if (id === null) throw notFound('subscriber')
  return findSubscriber(db, id)
}

export const subscribersRouter = createRouter()
  .openapi(routes.subscribe, subscribe)
  .openapi(routes.confirm, confirm)
  .openapi(routes.unsubscribe, unsubscribe)
  .openapi(routes.list, list)
  .openapi(routes.exportCsv, exportCsv)
  .openapi(routes.get, get)
  .openapi(routes.update, update)
  .openapi(routes.remove, remove)

