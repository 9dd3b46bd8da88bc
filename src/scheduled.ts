import { getConfig } from './config'
import type { Env } from './config'
import { createDb } from './db/client'
import { pruneChallenges } from './db/mfa'
import { pruneOneTimeTokens } from './db/one-time-tokens'
import { pruneSessions } from './db/sessions'
import { pruneSpentIdTokens } from './db/spent-id-tokens'
import { backfillUsernameKeys } from './db/users'
import { deliverDueEmails } from './email/outbox'
import { transportFor } from './email/transports'

// Expired rows are kept a week for support questions ("my link did not work"), then pruned.
const RETENTION_MS = 7 * 24 * 3_600_000

/**
 * The cron: deliver and retry queued email, then prune expired one-time tokens, sessions, MFA
 * token records and spent ID tokens, and
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
  const cutoff = new Date(now.getTime() - RETENTION_MS)
  await db.batch([
    pruneOneTimeTokens(db, cutoff),
    pruneSessions(db, cutoff),
    pruneChallenges(db, cutoff),
    pruneSpentIdTokens(db, cutoff),
  ])
  await backfillUsernameKeys(db, 10)
  console.log(JSON.stringify({ level: 'info', message: 'scheduled maintenance', ...report }))
}
