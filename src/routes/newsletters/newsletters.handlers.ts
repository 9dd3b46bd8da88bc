import type { Context } from 'hono'
import { countActiveSubscribers, findNewsletterOfPost, insertNewsletter } from '../../db/newsletters'
import { findPost } from '../../db/posts'
import type { PostWithAuthor } from '../../db/posts'
import { ApiError, notFound } from '../../lib/api-error'
import { derivedHmacKey } from '../../lib/hmac'
import { parseId } from '../../lib/ids'
import { unsubscribeTokenFor } from '../../lib/unsubscribe-tokens'
import { newsletterContent, newsletterEmail } from '../../newsletters/content'
import { cancelSend } from '../../newsletters/control'
import { queueStart } from '../../newsletters/start'
import { createRouter, mailerOf } from '../../router'
import type { AdminEnv, AppRouteHandler } from '../../router'
import { postStatus, postUrl } from '../../lib/publication'
import * as routes from './newsletters.routes'

export const send: AppRouteHandler<typeof routes.send, AdminEnv> = async (c) => {
  const { db } = c.var
  const now = new Date()
  const post = await postOr404(c)
  const status = postStatus(post.publishedAt, now)
  if (status === 'draft') {
    throw new ApiError(409, 'post_not_published', 'A draft cannot be mailed: publish or schedule the post first.')
  }
  if (c.req.valid('query').dry_run === 'true') {
    const recipients = await countActiveSubscribers(db)
    const view = { post_id: post.id, status: 'dry_run' as const, recipients, sent: 0, failed: 0, skipped: 0 }
    const times = { created_at: now.toISOString(), scheduled_for: null, started_at: null, completed_at: null }
    return c.json({ ...view, ...times }, 200)
  }
  const queue = c.env.MAIL_QUEUE
  if (queue === undefined) throw new ApiError(500, 'internal_error', 'Server misconfigured: MAIL_QUEUE is not bound.')
  mailerOf(c).assertCanSend()
  const newsletter = await insertNewsletter(
    db,
    {
      postId: post.id,
      scheduledFor: status === 'scheduled' ? post.publishedAt : null,
      createdBy: c.get('user').id,
      apiOrigin: new URL(c.req.url).origin,
    },
    now,
  )
  // The send starts from the queue, never in this request; if the queue cannot take it now, the
  // cron starts it within minutes (src/scheduled.ts).
  await queueStart(queue, newsletter.id, newsletter.scheduledFor, now).catch((err: unknown) => {
    console.error(
      JSON.stringify({ level: 'error', message: 'newsletter start not queued', error: (err as Error).name }),
    )
  })
  return c.json(routes.toNewsletterView(newsletter), 202)
}

export const get: AppRouteHandler<typeof routes.get, AdminEnv> = async (c) => {
  const newsletter = await newsletterOr404(c)
  return c.json(routes.toNewsletterView(newsletter), 200)
}

export const cancel: AppRouteHandler<typeof routes.cancel, AdminEnv> = async (c) => {
  const newsletter = await newsletterOr404(c)
  const cancelled = await cancelSend({ env: c.env }, newsletter.id)
  // Read again: the batches that were in flight have recorded their outcomes by now.
  const current = await findNewsletterOfPost(c.get('db'), newsletter.postId)
  if (!cancelled || current === undefined) {
    throw new ApiError(409, 'conflict', `This newsletter has finished (${current?.status ?? 'deleted'}).`)
  }
  return c.json(routes.toNewsletterView(current), 200)
}

export const sendTest: AppRouteHandler<typeof routes.sendTest, AdminEnv> = async (c) => {
  const { db, config, user } = c.var
  const post = await postOr404(c)
  if (!user.emailVerified) {
    throw new ApiError(400, 'validation_failed', 'Verify your email address first: a test goes only to it.', {
      errors: [{ path: '', message: 'the administrator’s email address is not verified' }],
    })
  }
  const mailer = mailerOf(c)
  const content = newsletterContent(config, {
    subject: `[Test] ${post.title}`,
    body: post.body,
    postUrl: postUrl(config, post),
    apiOrigin: new URL(c.req.url).origin,
  })
  const token = await unsubscribeTokenFor(user.email, await derivedHmacKey(config.tokens.secret, 'unsubscribe'))
  const email = newsletterEmail(content, user.email, token)
  await db.batch([
    mailer.queue(db, { to: email.to, subject: email.subject, text: email.text, headers: email.headers }, new Date()),
  ])
  await mailer.deliverSoon()
  return c.json({ status: 'accepted' as const }, 202)
}

async function postOr404(c: Context<AdminEnv>): Promise<PostWithAuthor> {
  const id = parseId(c.req.param('id') ?? '')
  const post = id === null ? undefined : await findPost(c.get('db'), { id })
  if (post === undefined) throw notFound('post')
  return post
}

async function newsletterOr404(c: Context<AdminEnv>) {
  const id = parseId(c.req.param('id') ?? '')
  const newsletter = id === null ? undefined : await findNewsletterOfPost(c.get('db'), id)
  if (newsletter === undefined) throw notFound('newsletter')
  return newsletter
}

export const newslettersRouter = createRouter()
  .openapi(routes.send, send)
  .openapi(routes.get, get)
  .openapi(routes.cancel, cancel)
  .openapi(routes.sendTest, sendTest)
