import { createRoute, z } from '@hono/zod-openapi'
import type { PostWithAuthor } from '../../db/posts'
import { requireUser } from '../../middleware/authenticate'
import { routePolicy } from '../../middleware/route-policy'
import { ETAG_HEADER, Timestamp, idParams, json, jsonBody, problems } from '../../router'
import { PaginationQuery, pageSchema } from '../pagination'

// The posts router is mounted at the API root: it also owns GET /users/{id}/posts, a user's posts.

const PostSchema = z
  .object({
    id: z.number().int().openapi({ example: 42 }),
    title: z.string().openapi({ example: 'Hello, edge' }),
    body: z.string().openapi({ example: 'Posts are stored in D1 and searchable with FTS5.' }),
    author: z.object({ id: z.number().int(), username: z.string() }),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi('Post')

export type Post = z.infer<typeof PostSchema>

export function toPostView(row: PostWithAuthor): Post {
  return {
    id: row.id,
    title: row.title,
    body: row.body,
    author: { id: row.authorId, username: row.authorUsername },
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  }
}

const Title = z.string().min(1).max(200).openapi({ example: 'Hello, edge' })
const Body = z.string().max(50_000).openapi({ example: 'Posts are stored in D1.' })

const PostInput = z.object({ title: Title, body: Body }).openapi('PostInput')
const PostPatch = z
  .object({ title: Title.optional(), body: Body.optional() })
  .refine((patch) => patch.title !== undefined || patch.body !== undefined, {
    message: 'give at least one of title, body',
  })
  .openapi('PostPatch')

const PostListQuery = PaginationQuery.extend({
  author: z.coerce.number().int().positive().optional().openapi({ type: 'integer', description: 'Author user id' }),
  q: z.string().trim().min(1).max(200).optional().openapi({ description: 'Full-text search over title and body' }),
  ordering: z.enum(['created_at', '-created_at']).default('-created_at'),
})

export const PostPage = pageSchema(PostSchema, 'PostPage')

const PostParams = idParams('42')
const UserParams = idParams('1')

// Posts and their lists are served from the edge cache; every write purges it.
const edgeCached = routePolicy({ edgeCached: true })
const purgesEdgeCache = routePolicy({ purgesEdgeCache: true })

export const list = createRoute({
  method: 'get',
  path: '/posts',
  tags: ['Posts'],
  summary: 'List posts (cursor-paginated, newest first by default)',
  middleware: [edgeCached] as const,
  request: { query: PostListQuery },
  responses: { 200: json(PostPage, 'A page of posts'), ...problems(400) },
})

export const create = createRoute({
  method: 'post',
  path: '/posts',
  tags: ['Posts'],
  summary: 'Write a post',
  middleware: [purgesEdgeCache, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(PostInput) },
  responses: {
    201: { ...json(PostSchema, 'The created post'), headers: { Location: { schema: { type: 'string' as const } } } },
    ...problems(400, 401, 413, 415, 429, 503),
  },
})

export const get = createRoute({
  method: 'get',
  path: '/posts/{id}',
  tags: ['Posts'],
  summary: 'Read a post (with ETag; If-None-Match → 304)',
  middleware: [edgeCached] as const,
  request: { params: PostParams },
  responses: {
    200: { ...json(PostSchema, 'The post'), headers: ETAG_HEADER },
    304: { description: 'Not modified', headers: ETAG_HEADER },
    ...problems(404),
  },
})

const writeResponses = {
  200: json(PostSchema, 'The updated post'),
  ...problems(400, 401, 403, 404, 413, 415, 429, 503),
}

export const replace = createRoute({
  method: 'put',
  path: '/posts/{id}',
  tags: ['Posts'],
  summary: 'Replace a post (author or admin)',
  middleware: [purgesEdgeCache, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams, body: jsonBody(PostInput) },
  responses: writeResponses,
})

export const update = createRoute({
  method: 'patch',
  path: '/posts/{id}',
  tags: ['Posts'],
  summary: 'Change some fields of a post (author or admin)',
  middleware: [purgesEdgeCache, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams, body: jsonBody(PostPatch) },
  responses: writeResponses,
})

export const remove = createRoute({
  method: 'delete',
  path: '/posts/{id}',
  tags: ['Posts'],
  summary: 'Delete a post (author or admin)',
  middleware: [purgesEdgeCache, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { params: PostParams },
  responses: { 204: { description: 'Deleted' }, ...problems(401, 403, 404, 429, 503) },
})

export const listOfUser = createRoute({
  method: 'get',
  path: '/users/{id}/posts',
  tags: ['Users'],
  summary: "A user's posts (cursor-paginated, newest first)",
  middleware: [edgeCached] as const,
  request: { params: UserParams, query: PaginationQuery },
  responses: { 200: json(PostPage, 'A page of posts'), ...problems(400, 404) },
})
