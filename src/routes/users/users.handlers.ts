import type { AuthedEnv } from '../../middleware/authenticate'
import { createRouter } from '../../router'
import type { AppRouteHandler } from '../../router'
import { requireUserRow } from './user-store'
import * as routes from './users.routes'

export const getMe: AppRouteHandler<typeof routes.getMe, AuthedEnv> = async (c) => {
  const user = await requireUserRow(c.var.db, c.var.auth.userId)
  c.header('Cache-Control', 'private, no-store')
  return c.json(routes.toPrivateUser(user), 200)
}

export const usersRouter = createRouter().openapi(routes.getMe, getMe)
