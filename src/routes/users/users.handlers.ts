import { eq } from 'drizzle-orm'
import { users } from '../../db/schema'
import type { UserRow } from '../../db/schema'
import { accountEmailStatements, deliverSoon } from '../../email/account-emails'
import { ApiError, notFound } from '../../errors'
import { verifyPassword } from '../../lib/passwords'
import type { AdminEnv, AuthedEnv } from '../../middleware/authenticate'
import { createRouter } from '../../router'
import type { AppRouteHandler, BatchStatements, Db } from '../../router'
import type { Config } from '../../config'
import type { TokenKeys } from '../../lib/token-keys'
import { endAllSessions } from '../auth/sessions'
import { PRIVATE_NO_STORE, PUBLIC_REVALIDATE, isNotModified } from '../http-caching'
import { keysetCondition, keysetOrder, readPageRequest, toPage } from '../pagination'
import type { Keyset } from '../pagination'
import { listPosts } from '../posts/post-store'
import { findUserById, requireUserRow, toConflict } from './user-store'
import * as routes from './users.routes'

const USER_ORDER: Keyset = { sortColumn: users.createdAt, idColumn: users.id, order: 'asc' }

export const list: AppRouteHandler<typeof routes.list> = async (c) => {
  const page = await readPageRequest(c.req.url, c.req.valid('query'), c.var.config)
  const rows = await c.var.db
    .select({ id: users.id, username: users.username, createdAt: users.createdAt })
    .from(users)
    .where(keysetCondition(USER_ORDER, page))
    .orderBy(...keysetOrder(USER_ORDER, page))
    .limit(page.limit + 1)
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  return c.json(await toPage(rows, page, (row) => ({ key: row.createdAt.getTime(), id: row.id }), routes.toPublicUser), 200)
}

export const get: AppRouteHandler<typeof routes.get> = async (c) => {
  const user = await findUserById(c.var.db, c.req.valid('param').id)
  if (user === undefined) throw notFound('user')
  const profile = routes.toPublicUser(user)
  if (await isNotModified(c, profile)) return c.body(null, 304)
  return c.json(profile, 200)
}

export const listPostsOf: AppRouteHandler<typeof routes.listPostsOf> = async (c) => {
  const user = await findUserById(c.var.db, c.req.valid('param').id)
  if (user === undefined) throw notFound('user')
  const page = await readPageRequest(c.req.url, c.req.valid('query'), c.var.config)
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  return c.json(await listPosts(c.var.db, { authorId: user.id, ordering: '-created_at' }, page), 200)
}

export const getMe: AppRouteHandler<typeof routes.getMe, AuthedEnv> = async (c) => {
  const user = await requireUserRow(c.var.db, c.var.auth.userId)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(routes.toPrivateUser(user), 200)
}

export const updateMe: AppRouteHandler<typeof routes.updateMe, AuthedEnv> = async (c) => {
  const user = await requireUserRow(c.var.db, c.var.auth.userId)
  const updated = await applyUserChanges(c.var.db, c.var.config, user, c.req.valid('json'))
  if (updated.email !== user.email) deliverSoon(c)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(routes.toPrivateUser(updated), 200)
}

export const deleteMe: AppRouteHandler<typeof routes.deleteMe, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const user = await requireUserRow(db, auth.userId)
  if (!(await verifyPassword(c.req.valid('json').password, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The password is incorrect.')
  }
  await deleteUser(c.var.db, c.var.kv, c.var.tokenKeys, user, [auth.sessionId])
  return c.body(null, 204)
}

export const adminUpdate: AppRouteHandler<typeof routes.adminUpdate, AdminEnv> = async (c) => {
  const target = await findUserById(c.var.db, c.req.valid('param').id)
  if (target === undefined) throw notFound('user')
  const { is_admin: isAdmin, email_verified: emailVerified, ...profile } = c.req.valid('json')
  const updated = await applyUserChanges(c.var.db, c.var.config, target, profile, { isAdmin, emailVerified })
  if (updated.email !== target.email && !updated.emailVerified) deliverSoon(c)
  return c.json(routes.toPrivateUser(updated), 200)
}

export const adminDelete: AppRouteHandler<typeof routes.adminDelete, AdminEnv> = async (c) => {
  const target = await findUserById(c.var.db, c.req.valid('param').id)
  if (target === undefined) throw notFound('user')
  await deleteUser(c.var.db, c.var.kv, c.var.tokenKeys, target)
  return c.body(null, 204)
}

/**
 * Saves profile changes. A new email is unverified again and gets a verification link, written in
 * the same batch; username/email conflicts → 409.
 */
async function applyUserChanges(
  db: Db,
  config: Config,
  user: UserRow,
  changes: { username?: string | undefined; email?: string | undefined },
  flags: { isAdmin?: boolean | undefined; emailVerified?: boolean | undefined } = {},
): Promise<UserRow> {
  const now = new Date()
  const username = changes.username ?? user.username
  const email = changes.email ?? user.email
  const emailChanged = email.toLowerCase() !== user.email.toLowerCase()
  const emailVerified = flags.emailVerified ?? (emailChanged ? false : user.emailVerified)
  const statements: BatchStatements = [
    db
      .update(users)
      .set({ username, email, emailVerified, isAdmin: flags.isAdmin ?? user.isAdmin, updatedAt: now })
      .where(eq(users.id, user.id))
      .returning(),
  ]
  if (emailChanged && !emailVerified) {
    statements.push(...(await accountEmailStatements('email_verification', db, config, { userId: user.id, username, email }, now)))
  }
  const [updated] = await db.batch(statements).catch(toConflict)
  return (updated as UserRow[])[0]!
}

/** Revokes every session (KV + D1), then deletes the user; posts, sessions and tokens cascade. */
async function deleteUser(
  db: Db,
  kv: KVNamespace,
  keys: TokenKeys,
  user: UserRow,
  alsoSids: string[] = [],
): Promise<void> {
  await endAllSessions(db, kv, user.id, 'account deleted', new Date(), keys, alsoSids)
  await db.delete(users).where(eq(users.id, user.id))
}

export const usersRouter = createRouter()
  .openapi(routes.list, list)
  .openapi(routes.getMe, getMe)
  .openapi(routes.updateMe, updateMe)
  .openapi(routes.deleteMe, deleteMe)
  .openapi(routes.get, get)
  .openapi(routes.listPostsOf, listPostsOf)
  .openapi(routes.adminUpdate, adminUpdate)
  .openapi(routes.adminDelete, adminDelete)

