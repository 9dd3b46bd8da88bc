import { and, eq, sql } from 'drizzle-orm'
import { users } from '../../db/schema'
import { consumeOneTimeToken } from '../../db/one-time-tokens'
import { accountEmailStatements, deliverSoon } from '../../email/account-emails'
import { ApiError } from '../../errors'
import type { AuthedEnv } from '../../middleware/authenticate'
import { limitByAccount } from '../../middleware/rate-limit'
import { hashPassword, verifyPassword } from '../../lib/passwords'
import type { AppRouteHandler } from '../../router'
import { findUserByLogin, requireUserRow } from '../users/user-store'
import * as routes from './account.routes'
import { endAllSessions, startSession } from './sessions'

export const passwordChange: AppRouteHandler<typeof routes.passwordChange, AuthedEnv> = async (c) => {
  const { old_password: oldPassword, new_password: newPassword } = c.req.valid('json')
  const { auth, db, config, tokenKeys } = c.var
  const user = await requireUserRow(db, auth.userId)
  if (!(await verifyPassword(oldPassword, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The current password is incorrect.')
  }
  const now = new Date()
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  // Every session ends, this one included; the caller continues in the new session below.
  await endAllSessions(db, c.var.kv, user.id, 'password change', now, tokenKeys, [auth.sessionId])
  const changePassword = db.update(users).set({ passwordHash, updatedAt: now }).where(eq(users.id, user.id))
  const { pair } = await startSession(db, user.id, tokenKeys, now, [changePassword])
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
    deliverSoon(c)
  }
  return c.json({ status: 'accepted' as const }, 202)
}

export const passwordResetConfirm: AppRouteHandler<typeof routes.passwordResetConfirm> = async (c) => {
  const { token, new_password: newPassword } = c.req.valid('json')
  const { db, config, tokenKeys } = c.var
  const now = new Date()
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  const owner = await consumeOneTimeToken(db, 'password_reset', token, now, (live) => [
    // Following the emailed link proves the address, so it counts as verified too.
    db
      .update(users)
      .set({
        passwordHash,
        updatedAt: now,
        emailVerified: sql`case when lower(${users.email}) = lower(${live.email}) then 1 else ${users.emailVerified} end`,
      })
      .where(eq(users.id, live.userId)),
  ])
  await endAllSessions(db, c.var.kv, owner.userId!, 'password reset', now, tokenKeys)
  return c.body(null, 204)
}

export const emailVerify: AppRouteHandler<typeof routes.emailVerify> = async (c) => {
  const { token } = c.req.valid('json')
  const { db } = c.var
  const now = new Date()
  await consumeOneTimeToken(db, 'email_verification', token, now, (live) => [
    // Only the address the link was sent to: after an email change, an old link verifies nothing.
    db
      .update(users)
      .set({ emailVerified: true, updatedAt: now })
      .where(and(eq(users.id, live.userId), sql`lower(${users.email}) = lower(${live.email})`)),
  ])
  return c.body(null, 204)
}

export const emailResend: AppRouteHandler<typeof routes.emailResend, AuthedEnv> = async (c) => {
  const { db, config } = c.var
  const user = await requireUserRow(db, c.var.auth.userId)
  if (!user.emailVerified) {
    const statements = await accountEmailStatements(
      'email_verification',
      db,
      config,
      { userId: user.id, username: user.username, email: user.email },
      new Date(),
    )
    await db.batch(statements)
    deliverSoon(c)
  }
  return c.json({ status: 'accepted' as const }, 202)
}
