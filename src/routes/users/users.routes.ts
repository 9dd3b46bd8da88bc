import { createRoute, z } from '@hono/zod-openapi'
import type { UserRow } from '../../db/schema'
import { requireAdmin, requireUser } from '../../middleware/authenticate'
import { ETAG_HEADER, Timestamp, json, jsonBody, problems } from '../../router'
import { EmailSchema, UsernameSchema } from '../account-fields'
import { PaginationQuery, pageSchema } from '../pagination'
import { PostPage } from '../posts/posts.routes'


export const PrivateUserSchema = z
  .object({
    id: z.number().int().openapi({ example: 1 }),
    username: z.string().openapi({ example: 'alice' }),
    email: z.string().openapi({ example: 'alice@example.com' }),
    email_verified: z.boolean(),
    is_admin: z.boolean(),
    created_at: Timestamp,
    last_login_at: Timestamp.nullable(),
  })
  .openapi('PrivateUser', { description: 'The account as its owner (or an admin) sees it.' })

export type PrivateUser = z.infer<typeof PrivateUserSchema>

/** The owner's view of a user row. Written by hand so no column (password_hash) leaks by default. */
export function toPrivateUser(user: UserRow): PrivateUser {
  return {
    id: user.id,
    username: user.username,
    email: user.email,
    email_verified: user.emailVerified,
    is_admin: user.isAdmin,
    created_at: user.createdAt.toISOString(),
    last_login_at: user.lastLoginAt?.toISOString() ?? null,
  }
}

export const PublicUserSchema = z
  .object({ id: z.number().int().openapi({ example: 1 }), username: z.string().openapi({ example: 'alice' }), created_at: Timestamp })
  .openapi('PublicUser', { description: 'What anyone may see of a user.' })

export type PublicUser = z.infer<typeof PublicUserSchema>

export function toPublicUser(user: Pick<UserRow, 'id' | 'username' | 'createdAt'>): PublicUser {
  return { id: user.id, username: user.username, created_at: user.createdAt.toISOString() }
}

const UserParams = z.object({ id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: '1' }) })

const MePatch = z
  .object({ username: UsernameSchema.optional(), email: EmailSchema.optional() })
  .openapi('UserMePatch')

const AdminUserPatch = z
  .object({
    username: UsernameSchema.optional(),
    email: EmailSchema.optional(),
    is_admin: z.boolean().optional(),
    email_verified: z.boolean().optional(),
  })
  .openapi('AdminUserPatch')

const DeleteMeInput = z.object({ password: z.string().min(1).max(1024) }).openapi('DeleteMeInput')

export const list = createRoute({
  method: 'get',
  path: '/',
  tags: ['Users'],
  summary: 'List public profiles (oldest first)',
  request: { query: PaginationQuery },
  responses: { 200: json(pageSchema(PublicUserSchema, 'PublicUserPage'), 'A page of profiles'), ...problems(400) },
})

export const get = createRoute({
  method: 'get',
  path: '/{id}',
  tags: ['Users'],
  summary: 'A public profile (with ETag)',
  request: { params: UserParams },
  responses: {
    200: { ...json(PublicUserSchema, 'The profile'), headers: ETAG_HEADER },
    304: { description: 'Not modified', headers: ETAG_HEADER },
    ...problems(404),
  },
})

export const listPostsOf = createRoute({
  method: 'get',
  path: '/{id}/posts',
  tags: ['Users'],
  summary: "A user's posts (cursor-paginated, newest first)",
  request: { params: UserParams, query: PaginationQuery },
  responses: { 200: json(PostPage, 'A page of posts'), ...problems(400, 404) },
})

export const updateMe = createRoute({
  method: 'patch',
  path: '/me',
  tags: ['Users'],
  summary: 'Change your username or email (a new email is unverified again)',
  middleware: [requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(MePatch) },
  responses: { 200: json(PrivateUserSchema, 'The updated account'), ...problems(400, 401, 409, 413, 415, 503) },
})

export const deleteMe = createRoute({
  method: 'delete',
  path: '/me',
  tags: ['Users'],
  summary: 'Delete your account and posts (password required)',
  middleware: [requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(DeleteMeInput) },
  responses: { 204: { description: 'Deleted; every token stops working' }, ...problems(400, 401, 413, 415, 503) },
})

export const adminUpdate = createRoute({
  method: 'patch',
  path: '/{id}',
  tags: ['Users'],
  summary: 'Change a user (admin)',
  middleware: [requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: UserParams, body: jsonBody(AdminUserPatch) },
  responses: { 200: json(PrivateUserSchema, 'The updated user'), ...problems(400, 401, 403, 404, 409, 413, 415, 503) },
})

export const adminDelete = createRoute({
  method: 'delete',
  path: '/{id}',
  tags: ['Users'],
  summary: 'Delete a user and their posts (admin)',
  middleware: [requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: UserParams },
  responses: { 204: { description: 'Deleted; every token of the user stops working' }, ...problems(401, 403, 404, 503) },
})

export const getMe = createRoute({
  method: 'get',
  path: '/me',
  tags: ['Users'],
  summary: 'The authenticated user (private view)',
  middleware: [requireUser()] as const,
  security: [{ Bearer: [] }],
  responses: {
    200: json(PrivateUserSchema, 'The authenticated user'),
    ...problems(401, 503),
  },
})
