import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import { ApiError, notFound } from '../../lib/api-error'
import { WEBHOOK_TOLERANCE_SECONDS, verifyWebhook } from '../../lib/webhook-signatures'
import type { WebhookHeaders, WebhookVerdict } from '../../lib/webhook-signatures'
import type { ConfigVariables } from '../../middleware/config'

/** What requireWebhookSignature() publishes: the id of the verified event. */
export interface WebhookVariables {
  webhookId: string
}

const REFUSALS: Record<Exclude<WebhookVerdict, 'valid'>, string> = {
  missing:
    'Send the webhook-id, webhook-timestamp and webhook-signature headers (or their svix- spellings) of Standard Webhooks.',
  stale: `The webhook timestamp is more than ${WEBHOOK_TOLERANCE_SECONDS / 60} minutes away from the server's clock.`,
  mismatch: 'No webhook signature matches this body under the configured secret.',
}

/**
 * Lets through only a webhook signed with MAIL_WEBHOOK_SECRET (401 `signature_invalid`), before
 * its body is validated: nothing about an unsigned request is looked at. The raw body is read here,
 * first, so the signature covers its exact bytes (the JSON validator reads the same bytes after).
 * Unset secret: the route does not exist (404).
 */
export function requireWebhookSignature() {
  return createMiddleware<{ Variables: ConfigVariables & WebhookVariables }>(
    async function requireWebhookSignature(c, next) {
      const secret = c.get('config').mail.webhookSecret
      if (secret === undefined) throw notFound('route')
      const headers = signatureHeaders(c)
      const body = new Uint8Array(await c.req.arrayBuffer())
      const verdict = await verifyWebhook(secret, headers, body, new Date())
      if (verdict !== 'valid') throw new ApiError(401, 'signature_invalid', REFUSALS[verdict])
      c.set('webhookId', headers.id!)
      await next()
    },
  )
}

/** The Standard Webhooks headers, or Svix's spelling of them (what Resend sends). */
function signatureHeaders(c: Context): WebhookHeaders {
  const header = (name: string) => c.req.header(`webhook-${name}`) ?? c.req.header(`svix-${name}`)
  return { id: header('id'), timestamp: header('timestamp'), signature: header('signature') }
}
