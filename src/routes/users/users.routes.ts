import { createRoute, z } from '@hono/zod-openapi'
import type { UserRow } from '../../db/schema'
import { requireUser } from '../../middleware/authenticate'
import { json, problems } from '../../router'

const Timestamp = z.string().openapi({ format: 'date-time', example: '2026-11-23T07:00:00.000Z' })

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
