import type { SQL } from 'drizzle-orm'
import type { OneTimeTokenPurpose } from '../db/schema'
import type { Config } from '../config'
import { createDb } from '../db/client'
import type { BatchStatements, Db } from '../db/client'
import { countTokensSentTo, issueOneTimeToken } from '../db/one-time-tokens'
import { LINK_PATHS, emailVerificationMessage, linkTo, passwordResetMessage } from './messages'
import { deliverInBackground } from './outbox'
import { queueEmail } from './queue'
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

// At most this many emails of one kind to one address per window, whoever asks: verification
// resends, email changes, reset requests and subscriptions cannot be turned into a mail bomb. Requests over the
// limit get the same answer; only the email is not sent.
const RECIPIENT_LIMIT = { emails: 3, windowMs: 3_600_000 }

/** Where the window of RECIPIENT_LIMIT starts: emails sent since then count. */
export function mailWindowStart(now: Date): Date {
  return new Date(now.getTime() - RECIPIENT_LIMIT.windowMs)
}

/** True while an address that was sent `sent` emails of one kind in the window may get another. */
export function withinMailLimit(sent: number): boolean {
  return sent < RECIPIENT_LIMIT.emails
}

/** True while `email` may be sent another `purpose` email (see RECIPIENT_LIMIT). */
export async function mayMail(db: Db, purpose: OneTimeTokenPurpose, email: string, now: Date): Promise<boolean> {
  return withinMailLimit(await countTokensSentTo(db, email, purpose, mailWindowStart(now)))
}

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
  return [insert, queueEmail(db, config, message(recipient.email, recipient.username, link), now)]
}

/**
 * After a batch that queued email has committed: deliver it once the response is on its way.
 * Delivery uses its own connection to D1 (the binding, not the request's session), so it is
 * neither part of the request's round trips nor bound to where its session started. Without an
 * execution context (the app called from a script) the cron delivers it instead.
 */
export function deliverSoon(
  executionCtx: Pick<ExecutionContext, 'waitUntil'> | undefined,
  bindings: { DB: D1Database },
  config: Config,
): void {
  const transport = transportFor(config)
  if (transport !== undefined) deliverInBackground(executionCtx, createDb(bindings), transport, config.mail.from)
}
