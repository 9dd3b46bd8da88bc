import { lt } from 'drizzle-orm'
import { getConfig } from './config'
import type { Env } from './config'
import { oneTimeTokens, sessions } from './db/schema'
import { deliverDueEmails } from './email/outbox'
import { transportFor } from './email/transports'
import { createDb } from './middleware/context'

// Expired rows are kept a week for support questions ("my link did not work"), then pruned.
const RETENTION_MS = 7 * 24 * 3_600_000

/** The cron: deliver and retry queued email, then prune expired one-time tokens and sessions. */
export async function runScheduledMaintenance(env: Env, now: Date): Promise<void> {
  const config = getConfig(env)
  const db = createDb(env)
  const report = await deliverDueEmails(db, transportFor(config), config.mail.from, now, 100)
  const cutoff = new Date(now.getTime() - RETENTION_MS)
  await db.batch([
    db.delete(oneTimeTokens).where(lt(oneTimeTokens.expiresAt, cutoff)),
    db.delete(sessions).where(lt(sessions.refreshExpiresAt, cutoff)),
  ])
  console.log(JSON.stringify({ level: 'info', message: 'scheduled maintenance', ...report }))
}
