import type { Context } from 'hono'
import type { Db } from '../../db/client'
import {
  deletePost,
  findPost,
  findPostForCaller,
  findPostToChange,
  insertPost,
  listPosts,
  listPostsOfUser,
  postKeyset,
  updatePost,
} from '../../db/posts'
import type {
  PostChanges,
  PostKey,
  PostListScope,
  PostListWindow,
  PostNewsletter,
  PostWithAuthor,
} from '../../db/posts'
import { NO_STORE, PRIVATE_NO_STORE, PUBLIC_REVALIDATE, isNotModified } from '../../http/conditional-get'
import { forbidden, notAuthenticated, notFound } from '../../lib/api-error'
import { parseId } from '../../lib/ids'
import { SLUG_MAX_LENGTH, SLUG_PATTERN } from '../../lib/slugs'
import type { Auth } from '../../middleware/authenticate'
import { API_PREFIX, createRouter } from '../../router'
import type { AppEnv, AppRouteHandler, AuthedEnv, OptionalAuthEnv } from '../../router'
import { readPageRequest, toPage } from '../pagination'
import { cancelUnfinishedSend, followPublication } from '../../newsletters/control'
import * as routes from './posts.routes'
import { postStatus, publishedAtAfter } from '../../lib/publication'
import type { PublicationInput } from '../../lib/publication'

export const list: AppRouteHandler<typeof routes.list, OptionalAuthEnv> = async (c) => {
  const { author, q, ordering = '-published_at', status = 'published', ...pagination } = c.req.valid('query')
  const scope = listScope(status, c.get('auth'))
  const page = await readPageRequest(c.req.url, pagination, c.get('config'))
  const filters = { scope, authorId: author, search: q, ordering }
  const now = new Date()
  const window = await listPosts(c.get('db'), filters, page, now)
  return c.json(await postPage(c, window, { filters, page, now }), 200)
}

export const listOfUser: AppRouteHandler<typeof routes.listOfUser> = async (c) => {
  const userId = parseId(c.req.valid('param').id)
  const page = await readPageRequest(c.req.url, c.req.valid('query'), c.get('config'))
  const now = new Date()
  // The user, the page and the next scheduled publication in one round trip.
  const window = userId === null ? undefined : await listPostsOfUser(c.get('db'), userId, page, now)
  if (window === undefined) throw notFound('user')
  const filters = { scope: { status: 'published' as const }, ordering: '-published_at' as const }
  return c.json(await postPage(c, window, { filters, page, now }), 200)
}

export const create: AppRouteHandler<typeof routes.create, AuthedEnv> = async (c) => {
  const { db, auth } = c.var
  const { title, body, slug, ...publication } = c.req.valid('json')
  const now = new Date()
  const publishedAt = publishedAtAfter(publicationOf(publication), undefined, now) ?? null
  // One batch to the primary (the insert and the author's name), after the slug lookup that
  // goes out together with the revocation check.
  const post = await insertPost(db, auth.userId, { title, body, slug, publishedAt }, now)
  c.header('Location', `${API_PREFIX}/posts/${post.id}`)
  c.header('Cache-Control', NO_STORE)
  return c.json(routes.toPostView(post, { config: c.get('config'), now }), 201)
}

export const get: AppRouteHandler<typeof routes.get, OptionalAuthEnv> = async (c) => {
  const id = parseId(c.req.valid('param').id)
  return answerPost(c, id === null ? null : { id })
}

export const getBySlug: AppRouteHandler<typeof routes.getBySlug, OptionalAuthEnv> = async (c) => {
  const { slug } = c.req.valid('param')
  return answerPost(c, slug.length <= SLUG_MAX_LENGTH && SLUG_PATTERN.test(slug) ? { slug } : null)
}

export const replace: AppRouteHandler<typeof routes.replace, AuthedEnv> = async (c) => {
  const editable = await findEditablePost(c.get('db'), c.req.valid('param').id, c.get('auth'))
  return c.json(await savePost(c, editable, c.req.valid('json')), 200)
}

export const update: AppRouteHandler<typeof routes.update, AuthedEnv> = async (c) => {
  const editable = await findEditablePost(c.get('db'), c.req.valid('param').id, c.get('auth'))
  return c.json(await savePost(c, editable, c.req.valid('json')), 200)
}

export const remove: AppRouteHandler<typeof routes.remove, AuthedEnv> = async (c) => {
  const { post, newsletter } = await findEditablePost(c.get('db'), c.req.valid('param').id, c.get('auth'))
  // Its newsletter goes with it (ON DELETE CASCADE), cancelled first so nothing more leaves.
  if (newsletter !== undefined) await cancelUnfinishedSend(c.env, newsletter)
  await deletePost(c.get('db'), post.id)
  return c.body(null, 204)
}

/** The posts a list with `status` shows the caller; only the published ones need no token. */
function listScope(status: 'draft' | 'scheduled' | 'published', auth: Auth | undefined): PostListScope {
  if (status === 'published') return { status }
  if (auth === undefined) throw notAuthenticated()
  return { status, viewerId: auth.userId }
}

/**
 * A page of posts. A public page may be edge-cached until the next scheduled post goes out; a
 * page of the caller's own drafts or scheduled posts is theirs alone.
 */
async function postPage<E extends AppEnv>(
  c: Context<E>,
  window: PostListWindow,
  list: { filters: Parameters<typeof postKeyset>[0]; page: Awaited<ReturnType<typeof readPageRequest>>; now: Date },
) {
  const isPublic = list.filters.scope.status === 'published'
  if (window.nextPublicationAt !== null) c.set('edgeCacheUntil', window.nextPublicationAt)
  c.header('Cache-Control', isPublic ? PUBLIC_REVALIDATE : PRIVATE_NO_STORE)
  const view = (row: PostWithAuthor) => routes.toPostView(row, { config: c.get('config'), now: list.now })
  return toPage(window.rows, list.page, postKeyset(list.filters).edgeOf, view)
}

/**
 * A single post, if the caller may see it: a published one to anyone, any other to its author and
 * administrators. To everyone else it does not exist (404, never 403: a draft's id or slug tells
 * nothing). What only its author sees is never cached for others.
 */
async function answerPost(c: Context<OptionalAuthEnv>, key: PostKey | null) {
  const now = new Date()
  const post = key === null ? undefined : await findVisiblePost(c.get('db'), key, c.get('auth'), now)
  if (post === undefined) throw notFound('post')
  const view = routes.toPostView(post, { config: c.get('config'), now })
  const cacheControl = view.status === 'published' ? PUBLIC_REVALIDATE : PRIVATE_NO_STORE
  if (await isNotModified(c, view, cacheControl)) return c.body(null, 304)
  return c.json(view, 200)
}

async function findVisiblePost(
  db: Db,
  key: PostKey,
  auth: Auth | undefined,
  now: Date,
): Promise<PostWithAuthor | undefined> {
  if (auth === undefined) {
    const post = await findPost(db, key)
    return post !== undefined && postStatus(post.publishedAt, now) === 'published' ? post : undefined
  }
  const { post, callerIsAdmin } = await findPostForCaller(db, key, auth.userId)
  if (post === undefined) return undefined
  const visible = postStatus(post.publishedAt, now) === 'published' || post.authorId === auth.userId || callerIsAdmin
  return visible ? post : undefined
}

/**
 * The post, if the caller is its author or an admin, with its newsletter (which follows the
 * post's life cycle). 404 before 403 so ids are not probed, and 404 for a post the caller may not
 * even see (another author's draft).
 */
async function findEditablePost(
  db: Db,
  rawId: string,
  auth: Auth,
): Promise<{ post: PostWithAuthor; newsletter: PostNewsletter | undefined }> {
  const id = parseId(rawId)
  const { post, callerIsAdmin, newsletter } =
    id === null
      ? { post: undefined, callerIsAdmin: false, newsletter: undefined }
      : await findPostToChange(db, { id }, auth.userId)
  if (post === undefined) throw notFound('post')
  if (post.authorId === auth.userId || callerIsAdmin) return { post, newsletter }
  if (postStatus(post.publishedAt, new Date()) !== 'published') throw notFound('post')
  throw forbidden('Only the author or an admin may change this post.')
}

interface PostWrite {
  title?: string | undefined
  body?: string | undefined
  slug?: string | undefined
  status?: PublicationInput['status']
  published_at?: string | undefined
}

async function savePost(
  c: Context<AuthedEnv>,
  { post, newsletter }: { post: PostWithAuthor; newsletter: PostNewsletter | undefined },
  write: PostWrite,
) {
  const now = new Date()
  const changes: PostChanges = {
    title: write.title,
    body: write.body,
    slug: write.slug,
    publishedAt: publishedAtAfter(publicationOf(write), post.publishedAt, now),
  }
  const saved = await updatePost(c.get('db'), post, changes, now)
  if (saved === undefined) throw notFound('post')
  // A newsletter follows its post: back to draft cancels it, a new time moves it.
  if (newsletter !== undefined && saved.publishedAt?.getTime() !== post.publishedAt?.getTime()) {
    await followPublication({ db: c.get('db'), env: c.env }, { post: saved, newsletter, now })
  }
  return routes.toPostView(saved, { config: c.get('config'), now })
}

function publicationOf(write: Pick<PostWrite, 'status' | 'published_at'>): PublicationInput {
  return {
    status: write.status,
    publishedAt: write.published_at === undefined ? undefined : new Date(write.published_at),
  }
}

export const postsRouter = createRouter()
  .openapi(routes.list, list)
  .openapi(routes.create, create)
  .openapi(routes.getBySlug, getBySlug)
  .openapi(routes.get, get)
  .openapi(routes.replace, replace)
  .openapi(routes.update, update)
  .openapi(routes.remove, remove)
  .openapi(routes.listOfUser, listOfUser)
