import type { SQL } from 'drizzle-orm'
import type { Context } from 'hono'
import type { Config } from '../config'
import { issueOneTimeToken } from '../db/one-time-tokens'
import type { AppEnv, BatchStatements, Db } from '../router'
import { LINK_PATHS, emailVerificationMessage, linkTo, passwordResetMessage } from './messages'
import { deliverInBackground, queueEmail } from './outbox'
import { transportFor } from './transports'

interface Recipient {
  /** The user id, or a subquery yielding it when the user is inserted in the same batch. */
  userId: number | SQL
  username: string
  email: string
}

/** Statements that issue an email-verification token and queue the email carrying it. */
export async function emailVerificationStatements(
  db: Db,
  config: Config,
  recipient: Recipient,
  now: Date,
): Promise<BatchStatements> {
  const { token, insert } = await issueOneTimeToken(db, 'email_verification', recipient, now)
  const link = linkTo(config.publicBaseUrl, LINK_PATHS.emailVerification, token)
  return [insert, queueEmail(db, emailVerificationMessage(recipient.email, recipient.username, link), now)]
}

/** Statements that issue a password-reset token (1 h, single use) and queue the email. */
export async function passwordResetStatements(
  db: Db,
  config: Config,
  recipient: Recipient,
  now: Date,
): Promise<BatchStatements> {
  const { token, insert } = await issueOneTimeToken(db, 'password_reset', recipient, now)
  const link = linkTo(config.publicBaseUrl, LINK_PATHS.passwordReset, token)
  return [insert, queueEmail(db, passwordResetMessage(recipient.email, recipient.username, link), now)]
}

/** After a batch that queued email has committed: deliver it once the response is on its way. */
export function deliverSoon<E extends AppEnv>(c: Context<E>): void {
  let executionCtx: ExecutionContext | undefined
  try {
    executionCtx = c.executionCtx
  } catch {
    executionCtx = undefined // app.request() in scripts has no execution context; the cron delivers
  }
  deliverInBackground(executionCtx, c.var.db, transportFor(c.var.config), c.var.config.mail.from)
}
