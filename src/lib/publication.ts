import { ApiError } from './api-error'

// A post's life cycle lives in one column, published_at: null is a draft, a time in the future is
// scheduled, a time in the past is published. The status is derived at every read from the
// request's clock, so a scheduled post turns published at its time, to the millisecond, with no
// job to run and nothing to forget.

export const POST_STATUSES = ['draft', 'scheduled', 'published'] as const
export type PostStatus = (typeof POST_STATUSES)[number]

export function postStatus(publishedAt: Date | null, now: Date): PostStatus {
  if (publishedAt === null) return 'draft'
  return publishedAt.getTime() > now.getTime() ? 'scheduled' : 'published'
}

/** What a write says about publication; both optional. */
export interface PublicationInput {
  status?: PostStatus | undefined
  publishedAt?: Date | undefined
}

/**
 * The published_at a write leaves the post with (undefined: unchanged). `current` is the post's
 * published_at, or undefined when the write creates the post.
 *
 * - nothing said: a new post is published now (what clients before drafts expect); an existing one
 *   keeps its state, so a PUT of title and body never unpublishes or re-dates a post.
 * - `draft`: unpublished (a published post goes back to draft); a time is refused.
 * - `scheduled`: needs a time in the future.
 * - `published` with a time: that time (in the past back-dates an import, in the future schedules);
 *   without one: now, unless the post is already published (it keeps its date).
 * - a time alone: as `published` with that time.
 */
export function publishedAtAfter(
  input: PublicationInput,
  current: Date | null | undefined,
  now: Date,
): Date | null | undefined {
  const { status, publishedAt } = input
  if (status === 'draft') {
    if (publishedAt !== undefined) throw publishedAtInvalid('must be left out for a draft')
    return null
  }
  if (status === 'scheduled') {
    if (publishedAt === undefined) throw publishedAtInvalid('is required to schedule a post')
    if (publishedAt.getTime() <= now.getTime()) throw publishedAtInvalid('must be in the future to schedule a post')
    return publishedAt
  }
  if (publishedAt !== undefined) return publishedAt
  if (status === 'published') {
    return current !== undefined && current !== null && postStatus(current, now) === 'published' ? undefined : now
  }
  return current === undefined ? now : undefined
}

function publishedAtInvalid(message: string): ApiError {
  return new ApiError(400, 'validation_failed', 'Invalid or missing: published_at.', {
    errors: [{ path: 'published_at', message }],
  })
}

/** Where the blog's front end shows a post: POST_URL_TEMPLATE with its slug and id. */
export function postUrl(settings: { postUrlTemplate: string }, post: { id: number; slug: string }): string {
  return settings.postUrlTemplate.replaceAll('{slug}', post.slug).replaceAll('{id}', String(post.id))
}
