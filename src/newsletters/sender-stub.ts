import type { Env } from '../config'
import type { NewsletterSender } from './sender'

// Apart from the class, so that the API's routes reach a sender without importing
// cloudflare:workers (the docs and OpenAPI scripts build the app in Node).

/** The NewsletterSender of one newsletter; throws when wrangler.toml does not bind the class. */
export function senderOf(
  env: Pick<Env, 'NEWSLETTER_SENDER'>,
  newsletterId: number,
): DurableObjectStub<NewsletterSender> {
  const namespace = env.NEWSLETTER_SENDER as DurableObjectNamespace<NewsletterSender> | undefined
  if (namespace === undefined) throw new Error('NEWSLETTER_SENDER is not bound (wrangler.toml)')
  return namespace.get(namespace.idFromName(String(newsletterId)))
}
