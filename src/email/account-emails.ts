import type { SQL } from 'drizzle-orm'
import type { BatchStatements, Db } from '../db/client'
import { issueOneTimeToken, issueTokenForAccountEmail } from '../db/one-time-tokens'
import type { RecipientLimit } from '../db/one-time-tokens'
import type { Mailer } from './mailer'
import { LINK_PATHS, emailVerificationMessage, linkTo, passwordResetMessage } from './messages'

// The emails that carry a one-time token for an account: the verification link and the reset link.

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
// resends, email changes, reset requests and subscriptions cannot be turned into a mail bomb.
// Requests over the limit get the same answer; only the email is not sent. The count is part of
// the INSERT of the token (src/db/one-time-tokens.ts), so a concurrent burst cannot pass it.
const RECIPIENT_LIMIT = { emails: 3, windowMs: 3_600_000 }

/** The per-recipient limit as it stands at `now`. */
export function recipientLimit(now: Date): RecipientLimit {
  return { max: RECIPIENT_LIMIT.emails, since: new Date(now.getTime() - RECIPIENT_LIMIT.windowMs) }
}

/**
 * Statements that issue a one-time token for a user (email verification 24 h, password reset 1 h)
 * within the per-recipient limit and queue the email carrying its link (only if the token was
 * issued): run them in one db.batch() with the change behind them.
 */
export async function accountEmailStatements(
  purpose: keyof typeof ACCOUNT_EMAILS,
  db: Db,
  mailer: Mailer,
  recipient: Recipient,
  now: Date,
): Promise<BatchStatements> {
  mailer.assertCanSend()
  const { token, tokenHash, insert } = await issueOneTimeToken(db, purpose, recipient, now, recipientLimit(now))
  const { path, message } = ACCOUNT_EMAILS[purpose]
  const link = linkTo(mailer.config.publicBaseUrl, path, token)
  const email = message(recipient.email, recipient.username, link)
  return [insert, mailer.queue(db, email, now, { onlyWithToken: tokenHash })]
}

// Stands for the username in a message whose recipient the database looks up (control characters
// are in no template and in no username).
const USERNAME = '\u0001username\u0001'

/**
 * The password-reset email for whichever account has `email`, if any (within the limit): two
 * statements, the same whether the address has an account or not, so neither the answer nor its
 * round trips tell (docs/design.md § No enumeration).
 */
export async function passwordResetStatements(
  db: Db,
  mailer: Mailer,
  email: string,
  now: Date,
): Promise<BatchStatements> {
  mailer.assertCanSend()
  const limit = recipientLimit(now)
  const { token, tokenHash, insert } = await issueTokenForAccountEmail(db, 'password_reset', email, now, limit)
  const link = linkTo(mailer.config.publicBaseUrl, LINK_PATHS.passwordReset, token)
  const { subject, text } = passwordResetMessage(email, USERNAME, link)
  return [insert, mailer.queueForToken(db, { subject, text, fill: { [USERNAME]: 'username' } }, tokenHash, now)]
}
