import { eq } from 'drizzle-orm'
import { posts } from '../../db/schema'
import { forbidden, notFound } from '../../errors'
import type { Auth, AuthedEnv } from '../../middleware/authenticate'
import { createRouter } from '../../router'
import type { AppRouteHandler, Db } from '../../router'
import { PUBLIC_REVALIDATE, isNotModified } from '../http-caching'
import { readPageRequest } from '../pagination'
import { parseId } from '../params'
import { findUserById, requireUserRow } from '../users/user-store'
import { findPost, listPosts, toPostView } from './post-store'
import type { PostWithAuthor } from './post-store'
import * as routes from './posts.routes'

export const list: AppRouteHandler<typeof routes.list> = async (c) => {
  const { author, q, ordering, ...pagination } = c.req.valid('query')
  const page = await readPageRequest(c.req.url, pagination, c.var.config)
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  return c.json(await listPosts(c.var.db, { authorId: author, search: q, ordering }, page), 200)
}

export const create: AppRouteHandler<typeof routes.create, AuthedEnv> = async (c) => {
  const { title, body } = c.req.valid('json')
  const { db, auth } = c.var
  const author = await requireUserRow(db, auth.userId)
  const now = new Date()
  const [post] = await db
    .insert(posts)
    .values({ authorId: author.id, title, body, createdAt: now, updatedAt: now })
    .returning()
  c.header('Location', `/api/v1/posts/${post!.id}`)
  c.header('Cache-Control', 'no-store')
  return c.json(toPostView({ ...post!, authorUsername: author.username }), 201)
}

export const get: AppRouteHandler<typeof routes.get> = async (c) => {
  const post = toPostView(await findPostOr404(c.var.db, c.req.valid('param').id))
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
  await c.var.db.delete(posts).where(eq(posts.id, post.id))
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
  const post = await findPostOr404(db, rawId)
  if (String(post.authorId) === auth.userId) return post
  const caller = await findUserById(db, auth.userId)
  if (caller?.isAdmin !== true) throw forbidden('Only the author or an admin may change this post.')
  return post
}

async function savePost(
  db: Db,
  post: PostWithAuthor,
  changes: { title?: string | undefined; body?: string | undefined },
) {
  const [saved] = await db
    .update(posts)
    .set({ title: changes.title ?? post.title, body: changes.body ?? post.body, updatedAt: new Date() })
    .where(eq(posts.id, post.id))
    .returning()
  if (saved === undefined) throw notFound('post')
  return toPostView({ ...saved, authorUsername: post.authorUsername })
}

export const postsRouter = createRouter()
  .openapi(routes.list, list)
  .openapi(routes.create, create)
  .openapi(routes.get, get)
  .openapi(routes.replace, replace)
  .openapi(routes.update, update)
  .openapi(routes.remove, remove)
