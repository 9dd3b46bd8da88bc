import { createRoute, z } from '@hono/zod-openapi'
import { SUBSCRIBER_STATUSES } from '../../db/schema'
import type { SubscriberRow } from '../../db/schema'
import { requireAdmin } from '../../middleware/authenticate'
import { routePolicy } from '../../middleware/route-policy'
import { limitByClientIp } from '../../middleware/rate-limit'
import { Timestamp, idParams, json, jsonBody, problems } from '../../router'
import { EmailSchema } from '../account-schemas'
import { PaginationQuery, pageSchema } from '../pagination'

// Admin reads start at the primary too: the subscriber list is personal data, and an admin demoted
// a moment ago must not read it once more from a replica that has not seen the demotion.
const adminAtPrimary = routePolicy({ d1Primary: true })

const Status = z.enum(SUBSCRIBER_STATUSES)
// Anyone may post a name for any address, and it is greeted in mail and exported as CSV: one line
// of visible text only. Refused: control characters (\p{Cc}: CR, LF, tab, NUL, DEL, C1), line and
// paragraph separators, lone surrogates, and format characters (\p{Cf}: bidi marks, embeddings,
// overrides and isolates, zero-width space, BOM, soft hyphen, tag characters) except ZWNJ and ZWJ,
// which Persian and Indic names and emoji sequences need and which neither reorder nor break text.
const UNSAFE_NAME_CHARACTER = /(?![\u200C\u200D])[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u
const Name = z
  .string()
  .trim()
  .max(200)
  .refine((name) => !UNSAFE_NAME_CHARACTER.test(name), {
    message: 'must be a single line of text without control characters or invisible formatting characters',
  })
  .openapi({
    example: 'Ada',
    description:
      'One line, up to 200 characters: no control, line-separator or format characters (ZWNJ and ZWJ allowed)',
  })

const SubscriberSchema = z
  .object({
    id: z.number().int().openapi({ example: 7 }),
    email: z.string().openapi({ example: 'reader@example.com' }),
    name: z.string().nullable(),
    status: Status,
    created_at: Timestamp,
    confirmed_at: Timestamp.nullable(),
  })
  .openapi('Subscriber')

export type Subscriber = z.infer<typeof SubscriberSchema>

export function toSubscriberView(row: SubscriberRow): Subscriber {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    status: row.status,
    created_at: row.createdAt.toISOString(),
    confirmed_at: row.confirmedAt?.toISOString() ?? null,
  }
}

const TokenInput = z.object({ token: z.string().min(1).max(512) }).openapi('SubscriberTokenInput')
const SubscriberParams = idParams('7')

export const subscribe = createRoute({
  method: 'post',
  path: '/',
  tags: ['Subscribers'],
  summary: 'Subscribe to the mailing list (double opt-in)',
  description:
    'Always 202 `{status:"pending"}`, whatever the address\'s state (no enumeration). A new, pending ' +
    'or unsubscribed address is emailed a confirmation link; an active one stays active. `name` is ' +
    'stored only when the address is new: an existing subscriber keeps its name, whoever posts.',
  middleware: [limitByClientIp('subscribe')] as const,
  request: { body: jsonBody(z.object({ email: EmailSchema, name: Name.optional() }).openapi('SubscribeInput')) },
  responses: {
    202: json(z.object({ status: z.literal('pending') }).openapi('SubscribeAccepted'), 'Check your inbox'),
    ...problems(400, 413, 415, 429),
  },
})

export const confirm = createRoute({
  method: 'post',
  path: '/confirm',
  tags: ['Subscribers'],
  summary: 'Confirm a subscription with the emailed token',
  request: { body: jsonBody(TokenInput) },
  responses: {
    200: json(
      z.object({ email: z.string(), status: z.literal('active') }).openapi('SubscriptionConfirmed'),
      'Subscribed',
    ),
    ...problems(400, 413, 415),
  },
})

// The one-click form of RFC 8058: the token in the URL of the List-Unsubscribe header, the body
// `List-Unsubscribe=One-Click`, posted by a mail provider without cookies or an Origin.
export const ONE_CLICK_FIELD = 'List-Unsubscribe'
const UnsubscribeToken = z.string().min(1).max(512)

export const unsubscribe = createRoute({
  method: 'post',
  path: '/unsubscribe',
  tags: ['Subscribers'],
  summary: 'Unsubscribe with the token every email carries (also RFC 8058 one-click)',
  description:
    'JSON `{token}` from the client app, or the one-click POST of a mail client (RFC 8058): ' +
    '`?token=` in the URL and the form body `List-Unsubscribe=One-Click`. The token alone ' +
    'authorises it: no cookie, no CSRF token. A bounced or complained subscriber keeps that status.',
  middleware: [routePolicy({ formBody: true, multipartBody: true })] as const,
  request: {
    query: z.object({
      token: UnsubscribeToken.optional().openapi({ description: 'One-click: the token of the List-Unsubscribe URL' }),
    }),
    body: jsonBody(
      z
        .object({
          token: UnsubscribeToken.optional().openapi({ description: 'The token (required unless one-click)' }),
          [ONE_CLICK_FIELD]: z
            .literal('One-Click')
            .optional()
            .openapi({ description: 'One-click: the form field a mail client posts, with the token in the URL' }),
        })
        .openapi('UnsubscribeInput'),
    ),
  },
  responses: {
    200: json(z.object({ status: z.literal('unsubscribed') }).openapi('Unsubscribed'), 'Unsubscribed'),
    ...problems(400, 413, 415),
  },
})

// Link scanners and prefetchers GET every URL of an email; only a POST unsubscribes (RFC 8058).
export const unsubscribeLink = createRoute({
  method: 'get',
  path: '/unsubscribe',
  tags: ['Subscribers'],
  summary: 'Changes nothing: a GET of the List-Unsubscribe URL never unsubscribes (405)',
  description:
    'Answers 405 `method_not_allowed` with `Allow: POST` whatever the query: mail scanners fetch ' +
    'every link of an email, so only the one-click POST unsubscribes.',
  responses: { ...problems(405) },
})

export const list = createRoute({
  method: 'get',
  path: '/',
  tags: ['Subscribers'],
  summary: 'List subscribers (admin)',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: {
    query: PaginationQuery.extend({
      status: Status.optional(),
      q: z.string().trim().min(1).max(200).optional().openapi({ description: 'Substring of email or name' }),
    }),
  },
  responses: {
    200: json(pageSchema(SubscriberSchema, 'SubscriberPage'), 'A page of subscribers, newest first'),
    ...problems(400, 401, 403, 503),
  },
})

export const exportCsv = createRoute({
  method: 'get',
  path: '/export',
  tags: ['Subscribers'],
  summary: 'Every subscriber as CSV, streamed (admin)',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  responses: {
    200: {
      content: {
        'text/csv': { schema: z.string().openapi({ example: 'id,email,name,status,created_at,confirmed_at\n' }) },
      },
      description:
        'Header row `id,email,name,status,created_at,confirmed_at`, RFC 4180 quoting; a text field ' +
        "starting with `=`, `+`, `-`, `@`, tab, CR, LF or NUL is prefixed with `'` (no formula)",
    },
    ...problems(401, 403, 503),
  },
})

export const get = createRoute({
  method: 'get',
  path: '/{id}',
  tags: ['Subscribers'],
  summary: 'A subscriber (admin)',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: SubscriberParams },
  responses: { 200: json(SubscriberSchema, 'The subscriber'), ...problems(401, 403, 404, 503) },
})

export const update = createRoute({
  method: 'patch',
  path: '/{id}',
  tags: ['Subscribers'],
  summary: 'Change a subscriber (admin)',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: {
    params: SubscriberParams,
    body: jsonBody(
      z.object({ name: Name.nullable().optional(), status: Status.optional() }).openapi('SubscriberPatch'),
    ),
  },
  responses: {
    200: json(SubscriberSchema, 'The updated subscriber'),
    ...problems(400, 401, 403, 404, 413, 415, 429, 503),
  },
})

export const remove = createRoute({
  method: 'delete',
  path: '/{id}',
  tags: ['Subscribers'],
  summary: 'Delete a subscriber (admin)',
  middleware: [adminAtPrimary, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: SubscriberParams },
  responses: { 204: { description: 'Deleted' }, ...problems(401, 403, 404, 429, 503) },
})
