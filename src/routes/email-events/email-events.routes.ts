import { createRoute, z } from '@hono/zod-openapi'
import type { UndeliverableStatus } from '../../db/subscribers'
import { json, jsonBody, problems } from '../../router'
import { requireWebhookSignature } from './email-events.signature'

/** Most recipients one event may name: the provider sends one per email. */
const MAX_RECIPIENTS = 50

const Recipients = z.array(z.string().trim().min(1).max(320)).min(1).max(MAX_RECIPIENTS)

/** The event types that stop mail to an address, and the subscriber status each sets. */
const UNDELIVERABLE_EVENTS: Readonly<Record<string, UndeliverableStatus>> = {
  'email.bounced': 'bounced',
  'email.complained': 'complained',
}

function statusSetBy(type: string): UndeliverableStatus | undefined {
  return Object.hasOwn(UNDELIVERABLE_EVENTS, type) ? UNDELIVERABLE_EVENTS[type] : undefined
}

// Resend's shape. Only a bounce or a complaint must name its recipients; the data of every other
// type is taken as it comes (recorded, not read), so a new event type is never refused.
const EmailEventSchema = z
  .object({
    type: z.string().min(1).max(100).openapi({ example: 'email.bounced' }),
    created_at: z.string().max(64).optional().openapi({ example: '2026-11-23T07:00:00.000Z' }),
    data: z
      .looseObject({
        to: z.unknown().openapi({
          type: 'array',
          items: { type: 'string' },
          description: `The addresses the email went to: 1 to ${MAX_RECIPIENTS} for a bounce or a complaint`,
          example: ['reader@example.com'],
        }),
      })
      .optional(),
  })
  .superRefine((event, context) => {
    if (statusSetBy(event.type) !== undefined && !Recipients.safeParse(event.data?.to).success) {
      context.addIssue({
        code: 'custom',
        path: ['data', 'to'],
        message: `must list the addresses the email went to (1 to ${MAX_RECIPIENTS})`,
      })
    }
  })
  .openapi('EmailEvent')

export type EmailEvent = z.infer<typeof EmailEventSchema>

/**
 * What an event does to subscribers: the status a bounce or a complaint sets and the addresses
 * it names (validated above); nothing for any other type.
 */
export function effectOf(event: EmailEvent): { status: UndeliverableStatus; recipients: string[] } | undefined {
  const status = statusSetBy(event.type)
  const recipients = Recipients.safeParse(event.data?.to)
  return status === undefined || !recipients.success ? undefined : { status, recipients: recipients.data }
}

const signatureHeader = (description: string) => z.string().optional().openapi({ description })

export const receive = createRoute({
  method: 'post',
  path: '/events',
  tags: ['Email events'],
  summary: "The email provider's webhooks: bounces and complaints (Standard Webhooks signature)",
  description:
    'Signed per Standard Webhooks with `MAIL_WEBHOOK_SECRET` (`svix-id`, `svix-timestamp` and ' +
    '`svix-signature` are accepted too). `email.bounced` and `email.complained` set the ' +
    'subscriber with that address (any case) to `bounced` or `complained`; other types are ' +
    'recorded and ignored. Always 200 `{status:"received"}` for a signed event, whatever it ' +
    'matched; a `webhook-id` seen before changes nothing. 404 while `MAIL_WEBHOOK_SECRET` is unset.',
  middleware: [requireWebhookSignature()] as const,
  request: {
    headers: z.object({
      'webhook-id': signatureHeader('The message id: a redelivery repeats it'),
      'webhook-timestamp': signatureHeader('Unix seconds; refused more than 5 minutes off'),
      'webhook-signature': signatureHeader('Space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`'),
    }),
    body: jsonBody(EmailEventSchema),
  },
  responses: {
    200: json(z.object({ status: z.literal('received') }).openapi('EmailEventReceived'), 'Received'),
    ...problems(400, 401, 404, 413, 415),
  },
})
