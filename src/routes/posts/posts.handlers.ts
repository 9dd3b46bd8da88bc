import type { Db } from '../../db/client'
import { createdAtEdge } from '../../db/keyset'
import {
  deletePost,
  findPost,
  findPostForCaller,
  insertPost,
  listPosts,
  listPostsOfUser,
  updatePost,
} from '../../db/posts'
import type { PostWithAuthor } from '../../db/posts'
import { NO_STORE, PUBLIC_REVALIDATE, isNotModified } from '../../http/conditional-get'
import { forbidden, notFound } from '../../lib/api-error'
import { parseId } from '../../lib/ids'
import type { Auth } from '../../middleware/authenticate'
import { API_PREFIX, createRouter } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import { readPageRequest, toPage } from '../pagination'
import * as routes from './posts.routes'

export const list: AppRouteHandler<typeof routes.list> = async (c) => {
  const { author, q, ordering, ...pagination } = c.req.valid('query')
  const page = await readPageRequest(c.req.url, pagination, c.var.config)
  const rows = await listPosts(c.var.db, { authorId: author, search: q, ordering }, page)
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  return c.json(await toPage(rows, page, createdAtEdge, routes.toPostView), 200)
}

export const listOfUser: AppRouteHandler<typeof routes.listOfUser> = async (c) => {
  const userId = parseId(c.req.valid('param').id)
  const page = await readPageRequest(c.req.url, c.req.valid('query'), c.var.config)
  // The user and the page in one round trip.
  const rows = userId === null ? undefined : await listPostsOfUser(c.var.db, userId, page)
  if (rows === undefined) throw notFound('user')
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  return c.json(await toPage(rows, page, createdAtEdge, routes.toPostView), 200)
}

export const create: AppRouteHandler<typeof routes.create, AuthedEnv> = async (c) => {
  const { db, auth } = c.var
  // One round trip to the primary: the insert and the author's name in one batch.
  const post = await insertPost(db, auth.userId, c.req.valid('json'), new Date())
  c.header('Location', `${API_PREFIX}/posts/${post.id}`)
  c.header('Cache-Control', NO_STORE)
  return c.json(routes.toPostView(post), 201)
}

export const get: AppRouteHandler<typeof routes.get> = async (c) => {
  const post = routes.toPostView(await findPostOr404(c.var.db, c.req.valid('param').id))
  if (await isNotModified(c, post)) return c.body(null, 304)
  return c.json(post, 200)
}

export const replace: AppRouteHandler<typeof routes.replace, AuthedEnv> = async (c) => {
  const post = await findEditablePost(c.var.db, c.req.valid('param').id, c.var.auth)
  return c.json(await savePost(c.var.db, post, c.req.valid('json')), 200)
}

export const update: AppRouteHandler<typeof routes.update, AuthedEnv> = async (c) => {
  const post = await findEditablePost(c.var.db, c.req.valid('param').id, c.var.auth)
  return c.json(await savePost(c.var.db, post, c.req.valid('json')), 200)
}

export const remove: AppRouteHandler<typeof routes.remove, AuthedEnv> = async (c) => {
  const post = await findEditablePost(c.var.db, c.req.valid('param').id, c.var.auth)
  await deletePost(c.var.db, post.id)
  return c.body(null, 204)
}

async function findPostOr404(db: Db, rawId: string): Promise<PostWithAuthor> {
  const id = parseId(rawId)
  const post = id === null ? undefined : await findPost(db, id)
  if (post === undefined) throw notFound('post')
  return post
}

/** The post, if the caller is its author or an admin; 404 before 403 so ids are not probed. */
async function findEditablePost(db: Db, rawId: string, auth: Auth): Promise<PostWithAuthor> {
  const id = parseId(rawId)
  const { post, callerIsAdmin } =
    id === null ? { post: undefined, callerIsAdmin: false } : await findPostForCaller(db, id, auth.userId)
  if (post === undefined) throw notFound('post')
  if (post.authorId === auth.userId || callerIsAdmin) return post
  throw forbidden('Only the author or an admin may change this post.')
}

async function savePost(
  db: Db,
  post: PostWithAuthor,
  changes: { title?: string | undefined; body?: string | undefined },
) {
  const saved = await updatePost(db, post, changes, new Date())
  if (saved === undefined) throw notFound('post')
  return routes.toPostView(saved)
}

export const postsRouter = createRouter()
  .openapi(routes.list, list)
  .openapi(routes.create, create)
  .openapi(routes.get, get)
  .openapi(routes.replace, replace)
  .openapi(routes.update, update)
  .openapi(routes.remove, remove)
  .openapi(routes.listOfUser, listOfUser)
