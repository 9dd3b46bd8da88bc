import { createRoute, z } from '@hono/zod-openapi'
import type { UserRow } from '../../db/schema'
import { requireAdmin, requireRecentSignIn, requireUser } from '../../middleware/authenticate'
import { routePolicy } from '../../middleware/route-policy'
import { ETAG_HEADER, Timestamp, idParams, json, jsonBody, problems } from '../../router'
import { EmailSchema, PrivateUserSchema, UsernameSchema } from '../account-schemas'
import { PaginationQuery, pageSchema } from '../pagination'

const PublicUserSchema = z
  .object({
    id: z.number().int().openapi({ example: 1 }),
    username: z.string().openapi({ example: 'alice' }),
    created_at: Timestamp,
  })
  .openapi('PublicUser', { description: 'What anyone may see of a user.' })

export type PublicUser = z.infer<typeof PublicUserSchema>

export function toPublicUser(user: Pick<UserRow, 'id' | 'username' | 'createdAt'>): PublicUser {
  return { id: user.id, username: user.username, created_at: user.createdAt.toISOString() }
}

const UserParams = idParams('1')

const MePatch = z.object({ username: UsernameSchema.optional(), email: EmailSchema.optional() }).openapi('UserMePatch')

const AdminUserPatch = z
  .object({
    username: UsernameSchema.optional(),
    email: EmailSchema.optional(),
    is_admin: z.boolean().optional(),
    email_verified: z.boolean().optional(),
  })
  .openapi('AdminUserPatch')

const DeleteMeInput = z
  .object({
    password: z
      .string()
      .min(1)
      .max(1024)
      .optional()
      .openapi({ description: 'Required when the account has a password (one created by a provider has none)' }),
  })
  .openapi('DeleteMeInput')

// Public profiles and their list are served from the edge cache; every write to a user changes
// what they show (usernames appear on posts too), so each one purges it.
const edgeCached = routePolicy({ edgeCached: true })
const purgesEdgeCache = routePolicy({ purgesEdgeCache: true })

export const list = createRoute({
  method: 'get',
  path: '/',
  tags: ['Users'],
  summary: 'List public profiles (oldest first)',
  middleware: [edgeCached] as const,
  request: { query: PaginationQuery },
  responses: { 200: json(pageSchema(PublicUserSchema, 'PublicUserPage'), 'A page of profiles'), ...problems(400) },
})

export const get = createRoute({
  method: 'get',
  path: '/{id}',
  tags: ['Users'],
  summary: 'A public profile (with ETag)',
  middleware: [edgeCached] as const,
  request: { params: UserParams },
  responses: {
    200: { ...json(PublicUserSchema, 'The profile'), headers: ETAG_HEADER },
    304: { description: 'Not modified', headers: ETAG_HEADER },
    ...problems(404),
  },
})

export const updateMe = createRoute({
  method: 'patch',
  path: '/me',
  tags: ['Users'],
  summary: 'Change your username or email (a new email is unverified again)',
  description:
    'A new email address needs a recent sign-in (`auth_time` within REAUTH_MAX_AGE; else 403 ' +
    '`reauthentication_required`), is unverified until its link is followed, and the old address is told.',
  middleware: [purgesEdgeCache, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(MePatch) },
  responses: {
    200: json(PrivateUserSchema, 'The updated account'),
    ...problems(400, 401, 403, 409, 413, 415, 429, 503),
  },
})

export const deleteMe = createRoute({
  method: 'delete',
  path: '/me',
  tags: ['Users'],
  summary: 'Delete your account and posts (password required, and a recent sign-in)',
  middleware: [purgesEdgeCache, requireUser(), requireRecentSignIn()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(DeleteMeInput) },
  responses: {
    204: { description: 'Deleted; every token stops working' },
    ...problems(400, 401, 403, 413, 415, 429, 503),
  },
})

export const adminUpdate = createRoute({
  method: 'patch',
  path: '/{id}',
  tags: ['Users'],
  summary: 'Change a user (admin)',
  middleware: [purgesEdgeCache, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: UserParams, body: jsonBody(AdminUserPatch) },
  responses: {
    200: json(PrivateUserSchema, 'The updated user'),
    ...problems(400, 401, 403, 404, 409, 413, 415, 429, 503),
  },
})

export const adminDelete = createRoute({
  method: 'delete',
  path: '/{id}',
  tags: ['Users'],
  summary: 'Delete a user and their posts (admin)',
  middleware: [purgesEdgeCache, requireAdmin()] as const,
  security: [{ Bearer: [] }],
  request: { params: UserParams },
  responses: {
    204: { description: 'Deleted; every token of the user stops working' },
    ...problems(401, 403, 404, 429, 503),
  },
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
