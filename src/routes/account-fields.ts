import { z } from '@hono/zod-openapi'

// Field schemas shared by auth (register, password flows) and users (PATCH /users/me).

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
      .regex(/^[^\s@/\\\p{C}]+$/u, {
        message: 'may contain letters, digits and punctuation, but no spaces, "@", "/" or "\\"',
      }),
  )
  .openapi({ type: 'string', minLength: 3, maxLength: 150, example: 'alice' })

export const EmailSchema = z
  .string()
  .trim()
  .max(254)
  .pipe(z.email())
  .openapi({ type: 'string', format: 'email', maxLength: 254, example: 'alice@example.com' })
