import { z } from '@hono/zod-openapi'
import type { UserRow } from '../db/schema'
import type { SignInMethods } from '../db/users'
import { usernameProblem } from '../lib/usernames'
import { Timestamp } from '../router'

// Account schemas shared by auth (register, password flows) and users (PATCH /users/me, the
// private view both return).

/** Passwords are 8–128 characters (code points, so an emoji counts once). */
export const PasswordSchema = z
  .string()
  .refine((value) => [...value].length >= 8, { message: 'must be at least 8 characters' })
  .refine((value) => [...value].length <= 128, { message: 'must be at most 128 characters' })
  .openapi({ format: 'password', minLength: 8, maxLength: 128, example: 'correct horse battery staple' })

export const UsernameSchema = z
  .string()
  .transform((value) => value.normalize('NFC'))
  .pipe(
    z
      .string()
      .min(3)
      .max(150)
      // The characters: no whitespace, "@", "/", "\", control, invisible or blank-looking ones, as
      // typed or in NFKC form (src/lib/usernames.ts); the first problem found is the message.
      .superRefine((value, ctx) => {
        const problem = usernameProblem(value)
        if (problem !== null) ctx.addIssue({ code: 'custom', message: problem })
      }),
  )
  .openapi({ type: 'string', minLength: 3, maxLength: 150, example: 'alice' })

export const EmailSchema = z
  .string()
  .trim()
  .max(254)
  .pipe(z.email())
  .openapi({ type: 'string', format: 'email', maxLength: 254, example: 'alice@example.com' })

export const PrivateUserSchema = z
  .object({
    id: z.number().int().openapi({ example: 1 }),
    username: z.string().openapi({ example: 'alice' }),
    email: z.string().openapi({ example: 'alice@example.com' }),
    email_verified: z.boolean(),
    is_admin: z.boolean(),
    mfa_enabled: z.boolean().openapi({ description: 'Two-factor sign-in (TOTP) is on' }),
    providers: z.array(z.string()).openapi({
      description: 'The sign-in providers linked to the account (OIDC_PROVIDERS names)',
      example: ['apple'],
    }),
    passkeys: z.number().int().openapi({ description: 'How many passkeys sign in to the account', example: 1 }),
    created_at: Timestamp,
    last_login_at: Timestamp.nullable(),
  })
  .openapi('PrivateUser', { description: 'The account as its owner (or an admin) sees it.' })

export type PrivateUser = z.infer<typeof PrivateUserSchema>

/** The owner's view of a user row. Written by hand so no column (password_hash) leaks by default. */
export function toPrivateUser(user: UserRow, signIns: SignInMethods): PrivateUser {
  return {
    id: user.id,
    username: user.username,
    email: user.email,
    email_verified: user.emailVerified,
    is_admin: user.isAdmin,
    mfa_enabled: user.mfaEnabled,
    providers: signIns.providers,
    passkeys: signIns.passkeys,
    created_at: user.createdAt.toISOString(),
    last_login_at: user.lastLoginAt?.toISOString() ?? null,
  }
}
