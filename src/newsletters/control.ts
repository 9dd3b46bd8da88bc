import type { Env } from '../config'
import type { Db } from '../db/client'
import { rescheduleNewsletter } from '../db/newsletters'
import { postStatus } from '../lib/publication'
import { senderOf } from './sender-stub'
import { queueStart } from './start'

// What other parts of the API do to a newsletter: cancel it (the post is deleted or goes back to
// draft, or an administrator asks), and follow its post's publication time.

export interface NewsletterControl {
  db: Db
  env: Pick<Env, 'MAIL_QUEUE' | 'NEWSLETTER_SENDER'>
}

function bound<T>(binding: T | undefined, name: string): T {
  if (binding === undefined) throw new Error(`${name} is not bound (wrangler.toml)`)
  return binding
}

/**
 * Cancels a newsletter through its NewsletterSender, which answers once every batch in flight
 * has finished: nothing of it leaves afterwards. True if it was cancelled now.
 */
export function cancelSend(control: Pick<NewsletterControl, 'env'>, newsletterId: number): Promise<boolean> {
  return senderOf(control.env, newsletterId).cancel(newsletterId)
}

/** Before a post is deleted: its send, if one is not finished, is cancelled. */
export async function cancelUnfinishedSend(
  env: NewsletterControl['env'],
  newsletter: { id: number; status: string },
): Promise<void> {
  if (isUnfinished(newsletter.status)) await cancelSend({ env }, newsletter.id)
}

function isUnfinished(status: string): boolean {
  return status === 'scheduled' || status === 'sending'
}

/**
 * After a post's publication time changed: back to draft cancels its send; a new time moves a
 * scheduled send (and one now in the past starts it).
 */
export async function followPublication(
  control: NewsletterControl,
  {
    post,
    newsletter,
    now,
  }: { post: { id: number; publishedAt: Date | null }; newsletter: { id: number; status: string }; now: Date },
): Promise<void> {
  if (postStatus(post.publishedAt, now) === 'draft') {
    await cancelUnfinishedSend(control.env, newsletter)
    return
  }
  if (newsletter.status !== 'scheduled' || post.publishedAt === null) return
  await control.db.batch([rescheduleNewsletter(control.db, post.id, post.publishedAt)])
  await queueStart(bound(control.env.MAIL_QUEUE, 'MAIL_QUEUE'), newsletter.id, post.publishedAt, now)
}
