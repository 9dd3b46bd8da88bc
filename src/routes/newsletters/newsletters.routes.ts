import { createRoute, z } from '@hono/zod-openapi'
import type { NewsletterRow } from '../../db/schema'
import { NEWSLETTER_STATUSES } from '../../db/schema'
import { requireAdmin } from '../../middleware/authenticate'
import { routePolicy } from '../../middleware/route-policy'
import { Timestamp, idParams, json, problems } from '../../router'

// Newsletters: a post mailed to the mailing list's active subscribers, once, by an administrator
// (docs/API.md § Newsletters). Mounted at the API root: its paths live under /posts/{id}.

const NewsletterSchema = z
  .object({
    post_id: z.number().int().openapi({ example: 42 }),
    status: z.enum([...NEWSLETTER_STATUSES, 'dry_run']).openapi({
      description:
        '`scheduled` (goes out when the post is published), `sending`, `sent` (every recipient accounted ' +
        'for), `cancelled`, `failed` (batches dead-lettered: the counters say how far it got); `dry_run` ' +
        'for `?dry_run=true`, which sends nothing',
    }),
    recipients: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'The active subscribers at the start; null until that snapshot is taken' }),
    sent: z.number().int(),
    failed: z.number().int(),
    skipped: z.number().int().openapi({ description: 'Unsubscribed, bounced or complained before their email left' }),
    created_at: Timestamp,
    scheduled_for: Timestamp.nullable(),
    started_at: Timestamp.nullable(),
    completed_at: Timestamp.nullable(),
  })
  .openapi('Newsletter')

export type NewsletterView = z.infer<typeof NewsletterSchema>

const iso = (date: Date | null): string | null => date?.toISOString() ?? null

export function toNewsletterView(row: NewsletterRow): NewsletterView {
  return {
    post_id: row.postId,
    status: row.status,
    recipients: row.recipients,
    sent: row.sent,
    failed: row.failed,
    skipped: row.skipped,
    created_at: row.createdAt.toISOString(),
    scheduled_for: iso(row.scheduledFor),
    started_at: iso(row.startedAt),
    completed_at: iso(row.completedAt),
  }
}

const adminAtPrimary = routePolicy({ d1Primary: true })
const PostParams = idParams('42')

const DryRunQuery = z.object({
  dry_run: z
    .enum(['true', 'false'])
    .optional()
    .openapi({ description: '`true`: count the recipients, send nothing (200, `status: "dry_run"`)' }),
})

export const send = createRoute({
  method: 'post',
  path: '/posts/{id}/newsletter',
  tags: ['Newsletters'],
  summary: 'Mail a post to the mailing list (administrators)',
  description:
    'A published post goes out now, a scheduled one when it is published (re-scheduling the post moves the ' +
    'send; turning it back to a draft cancels it). One send per post: a second is 409 `newsletter_exists`. ' +
    'Every active subscriber at the start is mailed exactly once; the answer is the send, whose progress ' +
    'GET shows.',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams, query: DryRunQuery },
  responses: {
    200: json(NewsletterSchema, 'Dry run: the recipients it would have, nothing sent'),
    202: json(NewsletterSchema, 'The send, scheduled or on its way'),
    ...problems(400, 401, 403, 404, 409, 429, 503),
  },
})

export const get = createRoute({
  method: 'get',
  path: '/posts/{id}/newsletter',
  tags: ['Newsletters'],
  summary: "A post's newsletter with its live counters (administrators)",
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams },
  responses: { 200: json(NewsletterSchema, 'The send'), ...problems(401, 403, 404, 503) },
})

export const cancel = createRoute({
  method: 'delete',
  path: '/posts/{id}/newsletter',
  tags: ['Newsletters'],
  summary: 'Cancel a scheduled or running send (administrators)',
  description:
    'Answers once every batch in flight has finished: no email of it leaves after the answer. A finished ' +
    'send (sent, cancelled, failed) is 409 `conflict`.',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams },
  responses: { 200: json(NewsletterSchema, 'The send, cancelled'), ...problems(401, 403, 404, 409, 429, 503) },
})

export const sendTest = createRoute({
  method: 'post',
  path: '/posts/{id}/newsletter/test',
  tags: ['Newsletters'],
  summary: "Mail the post to the calling administrator's own verified address only",
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams },
  responses: {
    202: json(z.object({ status: z.literal('accepted') }).openapi('TestSendAccepted'), 'Queued to your address'),
    ...problems(400, 401, 403, 404, 429, 500, 503),
  },
})
