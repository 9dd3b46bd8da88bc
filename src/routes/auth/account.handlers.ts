import type { Db } from '../../db/client'
import { consumeOneTimeToken, findLiveToken, spendTokensOf } from '../../db/one-time-tokens'
import type { UserRow } from '../../db/schema'
import { identitiesAddedWhileUnverified, removeIdentitiesAddedWhileUnverified } from '../../db/external-identities'
import { factorRow, removeFactorAddedWhileUnverified } from '../../db/mfa'
import { passkeysAddedWhileUnverified, removePasskeysAddedWhileUnverified } from '../../db/passkeys'
import {
  NO_SIGN_INS,
  backfillUsernameKeys,
  insertUser,
  loadAuthenticatedUser,
  markEmailVerified,
  resetPassword,
  setPassword,
  toConflict,
  userIdByEmail,
  userRow,
} from '../../db/users'
import { accountEmailStatements, passwordResetStatements } from '../../email/account-emails'
import type { QueuedEmail } from '../../email/mailer'
import { securityEventMessage } from '../../email/messages'
import { PRIVATE_NO_STORE } from '../../http/conditional-get'
import { deviceOf } from '../../http/device'
import { ApiError } from '../../lib/api-error'
import { hashPassword, verifyPassword } from '../../lib/passwords'
import { limitByAccount } from '../../middleware/rate-limit'
import { API_PREFIX, createRouter, mailerOf, sessionDeps } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import { endSessions } from '../../sessions/end'
import { newLoginSession } from '../../sessions/start'
import { toPrivateUser } from '../account-schemas'
import * as routes from './account.routes'
import { signedInAnswer } from './sign-in'

export const register: AppRouteHandler<typeof routes.register> = async (c) => {
  const { username, email, password } = c.req.valid('json')
  await limitByAccount(c, 'register', email)
  const { db, config } = c.var
  const now = new Date()
  const passwordHash = await hashPassword(password, config.passwordPepper)
  // Every old row keyed first, so the unique key index sees each name the new one could shadow.
  await backfillUsernameKeys(db)
  // The account, its verification token and the email carrying it land together or not at all.
  const recipient = { userId: userIdByEmail(email), username, email }
  const mailer = mailerOf(c)
  const [inserted] = await db
    .batch([
      insertUser(db, { username, email, passwordHash }, now),
      ...(await accountEmailStatements('email_verification', db, mailer, recipient, now)),
    ])
    .catch(toConflict)
  const user = (inserted as UserRow[])[0]!
  await mailer.deliverSoon()
  c.header('Location', `${API_PREFIX}/users/${user.id}`)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(toPrivateUser(user, NO_SIGN_INS), 201)
}

export const passwordChange: AppRouteHandler<typeof routes.passwordChange, AuthedEnv> = async (c) => {
  const { old_password: oldPassword, new_password: newPassword } = c.req.valid('json')
  const { auth, db, config } = c.var
  const user = await loadAuthenticatedUser(db, auth.userId)
  if (!(await verifyPassword(oldPassword, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The current password is incorrect.')
  }
  const now = new Date()
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  const deps = sessionDeps(c)
  const next = await newLoginSession(deps, { userId: user.id, device: deviceOf(c) }, now)
  // One batch: every session ends, the new hash is stored, outstanding reset links die, and the
  // caller continues in a new session. No login with the old password can slip in between.
  await endSessions(
    deps,
    user.id,
    { all: true, callerSid: auth.sessionId, callerTokenExpiresAt: auth.expiresAt },
    'password change',
    now,
    {
      commit: (revokeRows) =>
        db.batch([
          ...revokeRows(user.id),
          setPassword(db, user.id, passwordHash, now),
          spendTokensOf(db, user.id, 'password_reset', now),
          next.insert,
        ]),
      afterCommit: 'log',
    },
  )
  // A web app that came by cookie keeps its tokens out of page scripts: new cookies, no tokens.
  return c.json(await signedInAnswer(c, next, auth.viaCookie), 200)
}

export const passwordReset: AppRouteHandler<typeof routes.passwordReset> = async (c) => {
  const { email } = c.req.valid('json')
  await limitByAccount(c, 'password-reset', email)
  const { db } = c.var
  const mailer = mailerOf(c)
  // One batch, whoever owns the address: the token and its email are issued in SQL for the account
  // that has it, if any, within the per-recipient limit. The answer, its round trips and (without
  // a mail transport) its 500 are the same for every address.
  await db.batch(await passwordResetStatements(db, mailer, email, new Date()))
  await mailer.deliverSoon()
  return c.json({ status: 'accepted' as const }, 202)
}

export const passwordResetConfirm: AppRouteHandler<typeof routes.passwordResetConfirm> = async (c) => {
  const { token, new_password: newPassword } = c.req.valid('json')
  const { db, config } = c.var
  const now = new Date()
  // The link first: a bad or spent one costs a lookup, not a 100 000-iteration hash.
  const owner = await findLiveToken(db, 'password_reset', token, now)
  const userId = owner.userId!
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  const mailer = mailerOf(c)
  const squatted = await squattedMethods(db, userId)
  // One batch stores the hash, ends every session, removes the ways in added while the address
  // was unverified (the mailbox's owner is taking the account back), spends every reset link of
  // the user and finally this one; its statements name the user through the link, so a link spent
  // meanwhile changes nothing. A failure before it spends nothing: the link can be retried.
  await endSessions(sessionDeps(c), userId, { all: true }, 'password reset', now, {
    commit: (revokeRows) =>
      consumeOneTimeToken(db, 'password_reset', token, now, (live) => [
        resetPassword(db, live, passwordHash, now),
        ...revokeRows(live.userId),
        removeIdentitiesAddedWhileUnverified(db, live.userId),
        removePasskeysAddedWhileUnverified(db, live.userId),
        ...removeFactorAddedWhileUnverified(db, live.userId),
        spendTokensOf(db, live.userId, 'password_reset', now, live.tokenHash),
        ...(squatted === undefined ? [] : [mailer.queue(db, squatted, now, { onlyWithToken: live.tokenHash })]),
      ]),
    afterCommit: 'log',
  })
  if (squatted !== undefined) await mailer.deliverSoon()
  return c.body(null, 204)
}

export const emailVerify: AppRouteHandler<typeof routes.emailVerify> = async (c) => {
  const { token } = c.req.valid('json')
  const { db } = c.var
  const now = new Date()
  await consumeOneTimeToken(db, 'email_verification', token, now, (live) => [markEmailVerified(db, live, now)])
  return c.body(null, 204)
}

export const emailResend: AppRouteHandler<typeof routes.emailResend, AuthedEnv> = async (c) => {
  const { db, auth } = c.var
  const now = new Date()
  const user = await loadAuthenticatedUser(db, auth.userId)
  if (!user.emailVerified) {
    const mailer = mailerOf(c)
    const recipient = { userId: user.id, username: user.username, email: user.email }
    // Within the per-recipient limit, counted by the token's INSERT: over it, nothing is sent.
    await db.batch(await accountEmailStatements('email_verification', db, mailer, recipient, now))
    await mailer.deliverSoon()
  }
  return c.json({ status: 'accepted' as const }, 202)
}

/**
 * The sign-in methods of an account that were added while its address was unverified, which a
 * password reset removes (docs/design.md § Account squatting), as the email that tells the owner;
 * undefined when there are none.
 */
async function squattedMethods(db: Db, userId: number): Promise<QueuedEmail | undefined> {
  const [users, identities, factors, squattedPasskeys] = await db.batch([
    userRow(db, userId),
    identitiesAddedWhileUnverified(db, userId),
    factorRow(db, userId),
    passkeysAddedWhileUnverified(db, userId),
  ])
  const user = users[0]
  const methods = [
    ...identities.map((row) => `sign-in with ${row.provider}`),
    ...(factors[0]?.addedWhileUnverified === true ? ['the two-factor authenticator and its recovery codes'] : []),
    ...squattedPasskeys.map((row) => `the passkey “${row.name}”`),
  ]
  if (user === undefined || methods.length === 0) return undefined
  return securityEventMessage(user.email, user.username, 'sign_in_methods_removed', methods.join(', '))
}

export const accountRouter = createRouter()
  .openapi(routes.register, register)
  .openapi(routes.passwordChange, passwordChange)
  .openapi(routes.passwordReset, passwordReset)
  .openapi(routes.passwordResetConfirm, passwordResetConfirm)
  .openapi(routes.emailVerify, emailVerify)
  .openapi(routes.emailResend, emailResend)
