import type { BatchStatements, Db } from '../../db/client'
import { createdAtEdge } from '../../db/keyset'
import type { UserRow } from '../../db/schema'
import { markIdentitiesUnproven } from '../../db/external-identities'
import { markPasskeysUnproven } from '../../db/passkeys'
import { recordFactorProvenance } from '../../db/mfa'
import { spendTokensOf } from '../../db/one-time-tokens'
import {
  NO_SIGN_INS,
  deleteUserRow,
  findUserById,
  listUsers,
  loadAuthenticatedUser,
  loadPrivateUser,
  loadUserForChange,
  toConflict,
  updateUser,
} from '../../db/users'
import type { UserChanges } from '../../db/users'
import { accountEmailStatements } from '../../email/account-emails'
import type { Mailer } from '../../email/mailer'
import { securityEventMessage } from '../../email/messages'
import { PRIVATE_NO_STORE, PUBLIC_REVALIDATE, isNotModified } from '../../http/conditional-get'
import { notFound, userGone } from '../../lib/api-error'
import { parseId } from '../../lib/ids'
import { assertRecentSignIn } from '../../middleware/authenticate'
import { createRouter, mailerOf, sessionDeps } from '../../router'
import type { AdminEnv, AppRouteHandler, AuthedEnv } from '../../router'
import type { SessionDeps } from '../../sessions/deps'
import { endSessions } from '../../sessions/end'
import { assertAccountPassword } from '../account-password'
import { toPrivateUser } from '../account-schemas'
import { readPageRequest, toPage } from '../pagination'
import * as routes from './users.routes'

export const list: AppRouteHandler<typeof routes.list> = async (c) => {
  const page = await readPageRequest(c.req.url, c.req.valid('query'), c.get('config'))
  const rows = await listUsers(c.get('db'), page)
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  return c.json(await toPage(rows, page, createdAtEdge, routes.toPublicUser), 200)
}

export const get: AppRouteHandler<typeof routes.get> = async (c) => {
  const user = await findUserById(c.get('db'), c.req.valid('param').id)
  if (user === undefined) throw notFound('user')
  const profile = routes.toPublicUser(user)
  if (await isNotModified(c, profile)) return c.body(null, 304)
  return c.json(profile, 200)
}

export const getMe: AppRouteHandler<typeof routes.getMe, AuthedEnv> = async (c) => {
  const { user, signIns } = await loadPrivateUser(c.get('db'), c.get('auth').userId)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(toPrivateUser(user, signIns), 200)
}

export const updateMe: AppRouteHandler<typeof routes.updateMe, AuthedEnv> = async (c) => {
  const changes = c.req.valid('json')
  const { user, signIns } = await loadForChange(c.get('db'), c.get('auth').userId)
  if (user === undefined) throw userGone()
  // A new address is a lasting way in (reset links go there): it needs a recent sign-in.
  if (isNewEmail(user, changes.email)) assertRecentSignIn(c.get('auth'), c.get('config'), new Date())
  const mailer = mailerOf(c)
  const updated = await applyUserChanges(c.get('db'), mailer, user, changes, {})
  if (updated.email !== user.email) await mailer.deliverSoon()
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(toPrivateUser(updated, signIns), 200)
}

export const deleteMe: AppRouteHandler<typeof routes.deleteMe, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const user = await loadAuthenticatedUser(db, auth.userId)
  await assertAccountPassword(user, c.req.valid('json').password, config)
  await deleteAccount(sessionDeps(c), user.id, auth.sessionId)
  return c.body(null, 204)
}

export const adminUpdate: AppRouteHandler<typeof routes.adminUpdate, AdminEnv> = async (c) => {
  const { is_admin: isAdmin, email_verified: emailVerified, ...profile } = c.req.valid('json')
  const { user: target, signIns } = await loadForChange(c.get('db'), parseId(c.req.valid('param').id))
  if (target === undefined) throw notFound('user')
  const mailer = mailerOf(c)
  const updated = await applyUserChanges(c.get('db'), mailer, target, profile, { isAdmin, emailVerified })
  if (updated.email !== target.email) await mailer.deliverSoon()
  return c.json(toPrivateUser(updated, signIns), 200)
}

export const adminDelete: AppRouteHandler<typeof routes.adminDelete, AdminEnv> = async (c) => {
  const target = await findUserById(c.get('db'), c.req.valid('param').id)
  if (target === undefined) throw notFound('user')
  await deleteAccount(sessionDeps(c), target.id)
  return c.body(null, 204)
}

/** The change names another address than the account's (a change of case alone is not one). */
function isNewEmail(user: UserRow, email: string | undefined): boolean {
  return email !== undefined && email.toLowerCase() !== user.email.toLowerCase()
}

/**
 * Saves profile changes, writing only the columns the request changes: a stale copy of the row
 * must not write back what another request changed meanwhile (an admin's demotion, say). A new
 * email is unverified again, gets a verification link (within the per-recipient mail limit) and
 * spends every reset link sent to the old address, all in the same batch; username/email
 * conflicts → 409.
 */
async function applyUserChanges(
  db: Db,
  mailer: Mailer,
  user: UserRow,
  changes: { username?: string | undefined; email?: string | undefined },
  flags: { isAdmin?: boolean | undefined; emailVerified?: boolean | undefined },
): Promise<UserRow> {
  const now = new Date()
  const emailChanged = isNewEmail(user, changes.email)
  const emailVerified = flags.emailVerified ?? (emailChanged ? false : undefined)
  const columns: Partial<UserChanges> = {
    ...(changes.username === undefined ? {} : { username: changes.username }),
    ...(changes.email === undefined ? {} : { email: changes.email }),
    ...(emailVerified === undefined ? {} : { emailVerified }),
    ...(flags.isAdmin === undefined ? {} : { isAdmin: flags.isAdmin }),
  }
  const statements: BatchStatements = [updateUser(db, user.id, columns, now)]
  if (emailChanged) {
    const email = changes.email!
    // The old address hears of it: if the change was not its owner's, they know where it went.
    const notice = securityEventMessage(user.email, user.username, 'email_changed', email)
    statements.push(spendTokensOf(db, user.id, 'password_reset', now), mailer.queue(db, notice, now))
    if (emailVerified !== true) {
      const recipient = { userId: user.id, username: changes.username ?? user.username, email }
      statements.push(...(await accountEmailStatements('email_verification', db, mailer, recipient, now)))
      // Whoever holds the new mailbox added none of the account's ways in: a password reset from
      // there removes them, as it removes what a squatter adds before verifying.
      statements.push(
        markIdentitiesUnproven(db, user.id),
        markPasskeysUnproven(db, user.id),
        recordFactorProvenance(db, user.id, true),
      )
    }
  }
  const [updated] = await db.batch(statements).catch(toConflict)
  return (updated as UserRow[])[0]!
}

/** The row a change applies to and its sign-in methods, in one round trip (undefined user: no such id). */
function loadForChange(db: Db, id: number | null) {
  if (id === null) return Promise.resolve({ user: undefined, signIns: NO_SIGN_INS })
  return loadUserForChange(db, id)
}

/**
 * Deletes an account: every session ends (the caller's own key last), and the row goes with its
 * posts, sessions, identities and tokens in the batch between. A committed deletion is not undone
 * by a failure to write the last keys: those tokens name a user that no longer exists.
 */
async function deleteAccount(deps: SessionDeps, userId: number, callerSid?: string): Promise<void> {
  await endSessions(deps, userId, { all: true, callerSid }, 'account deleted', new Date(), {
    commit: () => deps.db.batch([deleteUserRow(deps.db, userId)]),
    afterCommit: 'log',
  })
}

export const usersRouter = createRouter()
  .openapi(routes.list, list)
  .openapi(routes.getMe, getMe)
  .openapi(routes.updateMe, updateMe)
  .openapi(routes.deleteMe, deleteMe)
  .openapi(routes.get, get)
  .openapi(routes.adminUpdate, adminUpdate)
  .openapi(routes.adminDelete, adminDelete)
