import { consumeOneTimeToken, findLiveToken, spendTokensOf } from '../../db/one-time-tokens'
import type { UserRow } from '../../db/schema'
import {
  backfillUsernameKeys,
  findUserByLogin,
  insertUser,
  loadAuthenticatedUser,
  loadUserForChange,
  markEmailVerified,
  resetPassword,
  setPassword,
  toConflict,
  userIdByEmail,
} from '../../db/users'
import {
  accountEmailStatements,
  deliverSoon,
  mailWindowStart,
  mayMail,
  withinMailLimit,
} from '../../email/account-emails'
import { assertMailConfigured } from '../../email/transports'
import { PRIVATE_NO_STORE } from '../../http/conditional-get'
import { deviceOf } from '../../http/device'
import { ApiError, userGone } from '../../lib/api-error'
import { hashPassword, verifyPassword } from '../../lib/passwords'
import { limitByAccount } from '../../middleware/rate-limit'
import { API_PREFIX, createRouter, executionContextOf, sessionDeps } from '../../router'
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
  const [inserted] = await db
    .batch([
      insertUser(db, { username, email, passwordHash }, now),
      ...(await accountEmailStatements('email_verification', db, config, recipient, now)),
    ])
    .catch(toConflict)
  const user = (inserted as UserRow[])[0]!
  deliverSoon(executionContextOf(c), c.env, config)
  c.header('Location', `${API_PREFIX}/users/${user.id}`)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(toPrivateUser(user, []), 201)
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
  await endSessions(deps, user.id, { all: true, callerSid: auth.sessionId }, 'password change', now, {
    commit: (revokeRows) =>
      db.batch([
        ...revokeRows(user.id),
        setPassword(db, user.id, passwordHash, now),
        spendTokensOf(db, user.id, 'password_reset', now),
        next.insert,
      ]),
    afterCommit: 'log',
  })
  // A web app that came by cookie keeps its tokens out of page scripts: new cookies, no tokens.
  return c.json(await signedInAnswer(c, next, auth.viaCookie), 200)
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
  const { db, config } = c.var
  const now = new Date()
  // The link first: a bad or spent one costs a lookup, not a 100 000-iteration hash.
  const owner = await findLiveToken(db, 'password_reset', token, now)
  const passwordHash = await hashPassword(newPassword, config.passwordPepper)
  // One batch stores the hash, ends every session, spends every reset link of the user and
  // finally this one; its statements name the user through the link, so a link spent meanwhile
  // changes nothing. A failure before it spends nothing: the link can be retried.
  await endSessions(sessionDeps(c), owner.userId!, { all: true }, 'password reset', now, {
    commit: (revokeRows) =>
      consumeOneTimeToken(db, 'password_reset', token, now, (live) => [
        resetPassword(db, live, passwordHash, now),
        ...revokeRows(live.userId),
        spendTokensOf(db, live.userId, 'password_reset', now, live.tokenHash),
      ]),
    afterCommit: 'log',
  })
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
  const { db, config, auth } = c.var
  const now = new Date()
  // The user and the verification emails their address got this hour, in one round trip.
  const { user, verificationsSent } = await loadUserForChange(db, auth.userId, 'own', mailWindowStart(now))
  if (user === undefined) throw userGone()
  if (!user.emailVerified && withinMailLimit(verificationsSent)) {
    const recipient = { userId: user.id, username: user.username, email: user.email }
    await db.batch(await accountEmailStatements('email_verification', db, config, recipient, now))
    deliverSoon(executionContextOf(c), c.env, config)
  }
  return c.json({ status: 'accepted' as const }, 202)
}

export const accountRouter = createRouter()
  .openapi(routes.register, register)
  .openapi(routes.passwordChange, passwordChange)
  .openapi(routes.passwordReset, passwordReset)
  .openapi(routes.passwordResetConfirm, passwordResetConfirm)
  .openapi(routes.emailVerify, emailVerify)
  .openapi(routes.emailResend, emailResend)
