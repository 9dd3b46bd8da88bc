import { createRoute, z } from '@hono/zod-openapi'
import type { Config } from '../../config'
import type { PostWithAuthor } from '../../db/posts'
import { SLUG_MAX_LENGTH, SLUG_PATTERN } from '../../lib/slugs'
import { optionalUser, requireUser } from '../../middleware/authenticate'
import { routePolicy } from '../../middleware/route-policy'
import { ETAG_HEADER, Timestamp, idParams, json, jsonBody, problems } from '../../router'
import { PaginationQuery, pageSchema } from '../pagination'
import { POST_STATUSES, postStatus, postUrl } from '../../lib/publication'

// The posts router is mounted at the API root: it also owns GET /users/{id}/posts, a user's posts.

const Status = z.enum(POST_STATUSES).openapi({
  description:
    '`draft`: not public. `scheduled`: public from `published_at` on (it then reads `published`, with no job ' +
    'to wait for). `published`: public.',
})

const PostSchema = z
  .object({
    id: z.number().int().openapi({ example: 42 }),
    title: z.string().openapi({ example: 'Hello, edge' }),
    body: z.string().openapi({ example: 'Posts are stored in D1 and searchable with FTS5.' }),
    slug: z.string().openapi({ example: 'hello-edge', description: 'Unique; kept when the title changes' }),
    url: z.string().openapi({
      example: 'https://blog.example.com/posts/hello-edge',
      description: 'Where the blog shows the post (POST_URL_TEMPLATE)',
    }),
    status: Status,
    published_at: Timestamp.nullable().openapi({ description: 'null for a draft; in the future while scheduled' }),
    author: z.object({ id: z.number().int(), username: z.string() }),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi('Post')

export type Post = z.infer<typeof PostSchema>

export function toPostView(row: PostWithAuthor, context: { config: Pick<Config, 'postUrlTemplate'>; now: Date }): Post {
  return {
    id: row.id,
    title: row.title,
    body: row.body,
    slug: row.slug,
    url: postUrl(context.config, row),
    status: postStatus(row.publishedAt, context.now),
    published_at: row.publishedAt?.toISOString() ?? null,
    author: { id: row.authorId, username: row.authorUsername },
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  }
}

const Title = z.string().min(1).max(200).openapi({ example: 'Hello, edge' })
const Body = z.string().max(50_000).openapi({ example: 'Posts are stored in D1.' })
const Slug = z
  .string()
  .max(SLUG_MAX_LENGTH)
  .regex(SLUG_PATTERN, { message: 'must be lower-case letters and digits joined by single hyphens' })
  .openapi({ example: 'hello-edge', description: 'Optional; derived from the title when left out' })
const PublishedAt = z.iso.datetime({ offset: true }).openapi({
  example: '2026-12-07T09:00:00Z',
  description: 'ISO 8601 with an offset. In the future: scheduled; in the past: back-dated (imports)',
})

const Publication = { status: Status.optional(), published_at: PublishedAt.optional() }

const PostInput = z.object({ title: Title, body: Body, slug: Slug.optional(), ...Publication }).openapi('PostInput')
const PostPatch = z
  .object({ title: Title.optional(), body: Body.optional(), slug: Slug.optional(), ...Publication })
  .refine((patch) => Object.values(patch).some((value) => value !== undefined), {
    message: 'give at least one of title, body, slug, status, published_at',
  })
  .openapi('PostPatch')

export const ORDERINGS = ['-published_at', 'published_at', '-created_at', 'created_at'] as const

const PostListQuery = PaginationQuery.extend({
  author: z.coerce.number().int().positive().optional().openapi({ type: 'integer', description: 'Author user id' }),
  q: z.string().trim().min(1).max(200).optional().openapi({ description: 'Full-text search over title and body' }),
  status: Status.optional().openapi({
    description:
      'Default `published` (the public blog). `draft` and `scheduled` need a token: your own posts in that ' +
      "state (an administrator's: everyone's). Drafts are listed by their last change, newest first",
  }),
  ordering: z.enum(ORDERINGS).optional().openapi({ default: '-published_at' }),
})

export const PostPage = pageSchema(PostSchema, 'PostPage')

const PostParams = idParams('42')
const SlugParams = z.object({
  slug: z.string().openapi({ param: { name: 'slug', in: 'path' }, example: 'hello-edge' }),
})
const UserParams = idParams('1')

// Posts and their lists are served from the edge cache; every write purges it.
const edgeCached = routePolicy({ edgeCached: true })
const purgesEdgeCache = routePolicy({ purgesEdgeCache: true })

const VISIBILITY =
  'Drafts and scheduled posts not yet out are seen only by their author and administrators: to anyone else ' +
  'they are 404.'

export const list = createRoute({
  method: 'get',
  path: '/posts',
  tags: ['Posts'],
  summary: 'List posts (cursor-paginated, newest publication first by default)',
  description: `Without \`status\`, the published posts, whoever asks. ${VISIBILITY}`,
  middleware: [edgeCached, optionalUser()] as const,
  request: { query: PostListQuery },
  responses: { 200: json(PostPage, 'A page of posts'), ...problems(400, 401, 503) },
})

export const create = createRoute({
  method: 'post',
  path: '/posts',
  tags: ['Posts'],
  summary: 'Write a post (published now unless `status` says otherwise)',
  middleware: [purgesEdgeCache, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(PostInput) },
  responses: {
    201: { ...json(PostSchema, 'The created post'), headers: { Location: { schema: { type: 'string' as const } } } },
    ...problems(400, 401, 409, 413, 415, 429, 503),
  },
})

export const get = createRoute({
  method: 'get',
  path: '/posts/{id}',
  tags: ['Posts'],
  summary: 'Read a post (with ETag; If-None-Match → 304)',
  description: VISIBILITY,
  middleware: [edgeCached, optionalUser()] as const,
  request: { params: PostParams },
  responses: {
    200: { ...json(PostSchema, 'The post'), headers: ETAG_HEADER },
    304: { description: 'Not modified', headers: ETAG_HEADER },
    ...problems(401, 404, 503),
  },
})

export const getBySlug = createRoute({
  method: 'get',
  path: '/posts/by-slug/{slug}',
  tags: ['Posts'],
  summary: 'Read a post by its slug (with ETag; If-None-Match → 304)',
  description: VISIBILITY,
  middleware: [edgeCached, optionalUser()] as const,
  request: { params: SlugParams },
  responses: {
    200: { ...json(PostSchema, 'The post'), headers: ETAG_HEADER },
    304: { description: 'Not modified', headers: ETAG_HEADER },
    ...problems(401, 404, 503),
  },
})

const writeResponses = {
  200: json(PostSchema, 'The updated post'),
  ...problems(400, 401, 403, 404, 409, 413, 415, 429, 503),
}

export const replace = createRoute({
  method: 'put',
  path: '/posts/{id}',
  tags: ['Posts'],
  summary: 'Replace a post (author or admin); publication is unchanged unless given',
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
  summary: "A user's published posts (cursor-paginated, newest publication first)",
  middleware: [edgeCached] as const,
  request: { params: UserParams, query: PaginationQuery },
  responses: { 200: json(PostPage, 'A page of posts'), ...problems(400, 404, 503) },
})
