import { getConfig } from './config'
import type { Env } from './config'
import { createDb } from './db/client'
import { pruneChallenges } from './db/mfa'
import { prunePasskeyChallenges } from './db/passkeys'
import { pruneOneTimeTokens } from './db/one-time-tokens'
import { pruneSessions } from './db/sessions'
import { pruneSpentIdTokens } from './db/spent-id-tokens'
import { backfillUsernameKeys } from './db/users'
import { pruneEmailEvents } from './db/email-events'
import { dueNewsletters, stalledSends } from './db/newsletters'
import { deliverDueEmails } from './email/outbox'
import { transportFor } from './email/transports'
import { queueStart } from './newsletters/start'

// Expired rows are kept a week for support questions ("my link did not work"), then pruned.
const RETENTION_MS = 7 * 24 * 3_600_000

/**
 * The cron: deliver and retry queued email, hand due newsletters to the queue, then prune expired
 * one-time tokens, sessions, MFA token records, passkey challenges, spent ID tokens and applied webhook ids, and
 * key the usernames of rows written before username keys existed (docs/design.md § Usernames). It
 * reads the configuration through getConfig, as withConfig does for requests (one memo).
 */
export async function runScheduledMaintenance(env: Env, now: Date): Promise<void> {
  const config = getConfig(env)
  const db = createDb(env)
  const transport = transportFor(config)
  const report =
    transport === undefined
      ? { unsent: 'the console transport is refused: PUBLIC_BASE_URL is not a local address' }
      : await deliverDueEmails(db, transport, config.mail.from, now, 100)
  await queueDueNewsletters(env, now)
  const cutoff = new Date(now.getTime() - RETENTION_MS)
  await db.batch([
    pruneOneTimeTokens(db, cutoff),
    pruneSessions(db, cutoff),
    pruneChallenges(db, cutoff),
    // At expiry, not after the retention: anyone may ask for a sign-in challenge.
    prunePasskeyChallenges(db, now),
    pruneSpentIdTokens(db, cutoff),
    // Providers retry a webhook for about a day; a week of ids catches every replay.
    pruneEmailEvents(db, cutoff),
  ])
  await backfillUsernameKeys(db, 10)
  console.log(JSON.stringify({ level: 'info', message: 'scheduled maintenance', ...report }))
}

// The cron runs every 5 minutes: a scheduled newsletter due within this look-ahead gets a start
// message delayed to its exact time, so it goes out on time even when it was scheduled further
// ahead than a queue message may wait (12 hours) or its first message was lost.
const NEWSLETTER_LOOKAHEAD_MS = 15 * 60_000
// A snapshot takes seconds per chunk; one without progress for this long lost its message.
const STALLED_AFTER_MS = 5 * 60_000

/** Hands the queue the newsletters due soon, and any send whose start message was lost. */
async function queueDueNewsletters(env: Env, now: Date): Promise<void> {
  const queue = env.MAIL_QUEUE
  if (queue === undefined) return
  const db = createDb(env)
  const [due, stalled] = await db.batch([
    dueNewsletters(db, new Date(now.getTime() + NEWSLETTER_LOOKAHEAD_MS)),
    stalledSends(db, new Date(now.getTime() - STALLED_AFTER_MS)),
  ])
  // Duplicates are harmless: a start that already happened finds nothing to start, and of two
  // deliveries of one snapshot step only one moves on.
  for (const newsletter of due) await queueStart(queue, newsletter.id, newsletter.scheduledFor, now)
  for (const newsletter of stalled) {
    if (newsletter.startedAt === null) await queueStart(queue, newsletter.id, null, now)
    else await queue.send({ kind: 'newsletter-snapshot', newsletterId: newsletter.id })
  }
}
