import { consumeOneTimeToken } from '../../db/one-time-tokens'
import { endAllSessions, startSession } from '../../db/sessions'
import { findUserByLogin, loadAuthenticatedUser, markEmailVerified, resetPassword, setPassword } from '../../db/users'
import { accountEmailStatements, deliverSoon } from '../../email/account-emails'
import { ApiError } from '../../lib/api-error'
import { hashPassword, verifyPassword } from '../../lib/passwords'
import { limitByAccount } from '../../middleware/rate-limit'
import { executionContextOf } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import * as routes from './account.routes'

export const passwordChange: AppRouteHandler<typeof routes.passwordChange, AuthedEnv> = async (c) => {
  const { old_password: oldPassword, new_password: newPassword } = c.req.valid('json')
  const { auth, db, config, tokenKeys } = c.var
  const user = await loadAuthenticatedUser(db, auth.userId)
  if (!(await verifyPassword(oldPassword, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The current password is incorrect.')
  }
  const now = new Date()
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  // Every session ends, this one included; the caller continues in the new session below.
  await endAllSessions(db, c.var.kv, user.id, 'password change', now, tokenKeys, [auth.sessionId])
  const { pair } = await startSession(db, user.id, tokenKeys, now, [setPassword(db, user.id, passwordHash, now)])
  return c.json(pair, 200)
}

export const passwordReset: AppRouteHandler<typeof routes.passwordReset> = async (c) => {
  const { email } = c.req.valid('json')
  await limitByAccount(c, 'password-reset', email)
  const { db, config } = c.var
  const user = await findUserByLogin(db, email)
  if (user !== undefined) {
    const now = new Date()
    const recipient = { userId: user.id, username: user.username, email: user.email }
    await db.batch(await accountEmailStatements('password_reset', db, config, recipient, now))
    deliverSoon(executionContextOf(c), db, config)
  }
  return c.json({ status: 'accepted' as const }, 202)
}

export const passwordResetConfirm: AppRouteHandler<typeof routes.passwordResetConfirm> = async (c) => {
  const { token, new_password: newPassword } = c.req.valid('json')
  const { db, config, tokenKeys } = c.var
  const now = new Date()
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  const owner = await consumeOneTimeToken(db, 'password_reset', token, now, (live) => [
    resetPassword(db, live, passwordHash, now),
  ])
  await endAllSessions(db, c.var.kv, owner.userId!, 'password reset', now, tokenKeys)
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
  const user = await loadAuthenticatedUser(db, c.var.auth.userId)
  if (!user.emailVerified) {
    const statements = await accountEmailStatements(
      'email_verification',
      db,
      config,
      { userId: user.id, username: user.username, email: user.email },
      new Date(),
    )
    await db.batch(statements)
    deliverSoon(executionContextOf(c), db, config)
  }
  return c.json({ status: 'accepted' as const }, 202)
}
