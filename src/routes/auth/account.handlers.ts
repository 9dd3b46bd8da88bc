import { consumeOneTimeToken, findLiveToken, spendTokensOf } from '../../db/one-time-tokens'
import { completeRevocation, revokeLiveSessions, revokeSessionKeys, startSession } from '../../db/sessions'
import {
  findUserByLogin,
  loadAuthenticatedUser,
  loadUserForChange,
  markEmailVerified,
  resetPassword,
  setPassword,
} from '../../db/users'
import {
  accountEmailStatements,
  deliverSoon,
  mailWindowStart,
  mayMail,
  withinMailLimit,
} from '../../email/account-emails'
import { assertMailConfigured } from '../../email/transports'
import { NO_STORE } from '../../http/conditional-get'
import { setSessionCookies } from '../../http/cookie-session'
import { deviceOf } from '../../http/device'
import { ApiError } from '../../lib/api-error'
import { parseId } from '../../lib/ids'
import { hashPassword, verifyPassword } from '../../lib/passwords'
import { limitByAccount } from '../../middleware/rate-limit'
import { executionContextOf } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import type * as routes from './account.routes'

export const passwordChange: AppRouteHandler<typeof routes.passwordChange, AuthedEnv> = async (c) => {
  const { old_password: oldPassword, new_password: newPassword } = c.req.valid('json')
  const { auth, db, kv, config, tokenKeys } = c.var
  const user = await loadAuthenticatedUser(db, auth.userId)
  if (!(await verifyPassword(oldPassword, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The current password is incorrect.')
  }
  const now = new Date()
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  // The other sessions' access tokens stop first: if that fails nothing has changed, and a retry
  // with the same body completes it.
  const written = await revokeSessionKeys(db, kv, user.id, 'password change', now, tokenKeys, {
    includeLive: true,
    exceptSid: auth.sessionId,
  })
  // One batch: every session ends, the new hash is stored, outstanding reset links die, and the
  // caller continues in a new session. No login with the old password can slip in between.
  const { pair, sessionId } = await startSession(
    db,
    user.id,
    tokenKeys,
    now,
    [
      revokeLiveSessions(db, user.id, now, tokenKeys),
      setPassword(db, user.id, passwordHash, now),
      spendTokensOf(db, user.id, 'password_reset', now),
    ],
    deviceOf(c),
  )
  await completeRevocation(db, kv, user.id, 'password change', now, tokenKeys, written, auth.sessionId)
  // A web app that came by cookie keeps its tokens out of page scripts: new cookies, no tokens.
  if (auth.viaCookie) return c.json(await setSessionCookies(c, pair, sessionId, config), 200)
  c.header('Cache-Control', NO_STORE)
  return c.json(pair, 200)
}

export const passwordReset: AppRouteHandler<typeof routes.passwordReset> = async (c) => {
  const { email } = c.req.valid('json')
  await limitByAccount(c, 'password-reset', email)
  const { db, config } = c.var
  // Before the lookup: without a mail transport every address gets the same 500, so the answer
  // still says nothing about which addresses have an account.
  assertMailConfigured(config)
  const user = await findUserByLogin(db, email)
  const now = new Date()
  if (user !== undefined && (await mayMail(db, 'password_reset', user.email, now))) {
    const recipient = { userId: user.id, username: user.username, email: user.email }
    await db.batch(await accountEmailStatements('password_reset', db, config, recipient, now))
    deliverSoon(executionContextOf(c), c.env, config)
  }
  return c.json({ status: 'accepted' as const }, 202)
}

export const passwordResetConfirm: AppRouteHandler<typeof routes.passwordResetConfirm> = async (c) => {
  const { token, new_password: newPassword } = c.req.valid('json')
  const { db, kv, config, tokenKeys } = c.var
  const now = new Date()
  // The link first: a bad or spent one costs a lookup, not a 100 000-iteration hash.
  const owner = await findLiveToken(db, 'password_reset', token, now)
  const userId = owner.userId!
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  // As for a password change: access tokens first (a failure spends nothing, the link can be
  // retried), then one batch that stores the hash, ends every session, spends every reset link of
  // the user and finally this one.
  const written = await revokeSessionKeys(db, kv, userId, 'password reset', now, tokenKeys, { includeLive: true })
  await consumeOneTimeToken(db, 'password_reset', token, now, (live) => [
    resetPassword(db, live, passwordHash, now),
    revokeLiveSessions(db, live.userId, now, tokenKeys),
    spendTokensOf(db, live.userId, 'password_reset', now, live.tokenHash),
  ])
  await completeRevocation(db, kv, userId, 'password reset', now, tokenKeys, written)
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
  const { db, config } = c.var
  const now = new Date()
  // The user and the verification emails their address got this hour, in one round trip.
  const userId = parseId(c.var.auth.userId)
  const { user, verificationsSent } =
    userId === null
      ? { user: undefined, verificationsSent: 0 }
      : await loadUserForChange(db, userId, 'own', mailWindowStart(now))
  if (user === undefined) throw new ApiError(401, 'token_invalid', 'The token names a user that does not exist.')
  if (!user.emailVerified && withinMailLimit(verificationsSent)) {
    const statements = await accountEmailStatements(
      'email_verification',
      db,
      config,
      { userId: user.id, username: user.username, email: user.email },
      now,
    )
    await db.batch(statements)
    deliverSoon(executionContextOf(c), c.env, config)
  }
  return c.json({ status: 'accepted' as const }, 202)
}
