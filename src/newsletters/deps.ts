import { getConfig } from '../config'
import type { Env } from '../config'
import { createDb } from '../db/client'
import { transportFor } from '../email/transports'
import { derivedHmacKey } from '../lib/hmac'
import type { DeliveryDeps } from './deliver'
import { oneAtATime } from '../lib/one-at-a-time'
import { groupedLedger } from './ledger'

/** What sending needs, from the Worker's environment (the queue consumer and NewsletterSender have no request). */
export async function deliveryDeps(env: Env): Promise<DeliveryDeps> {
  const config = getConfig(env)
  const transport = transportFor(config)
  if (transport === undefined) {
    // The console transport on a deployed worker: refused, as for every other email.
    throw new Error('MAIL_TRANSPORT is console on a worker whose PUBLIC_BASE_URL is not local: nothing is sent')
  }
  return {
    ledger: groupedLedger(createDb(env)),
    config,
    transport,
    unsubscribeKey: await derivedHmacKey(config.tokens.secret, 'unsubscribe'),
    renderInTurn: oneAtATime(),
  }
}
