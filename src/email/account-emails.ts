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

const ACCOUNT_EMAILS = {
  email_verification: { path: LINK_PATHS.emailVerification, message: emailVerificationMessage },
  password_reset: { path: LINK_PATHS.passwordReset, message: passwordResetMessage },
} as const

/**
 * Statements that issue a one-time token for a user (email verification 24 h, password reset 1 h)
 * and queue the email carrying its link: run them in one db.batch() with the change behind them.
 */
export async function accountEmailStatements(
  purpose: keyof typeof ACCOUNT_EMAILS,
  db: Db,
  config: Config,
  recipient: Recipient,
  now: Date,
): Promise<BatchStatements> {
  const { token, insert } = await issueOneTimeToken(db, purpose, recipient, now)
  const { path, message } = ACCOUNT_EMAILS[purpose]
  const link = linkTo(config.publicBaseUrl, path, token)
  return [insert, queueEmail(db, message(recipient.email, recipient.username, link), now)]
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
