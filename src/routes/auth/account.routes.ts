import { createRoute, z } from '@hono/zod-openapi'
import { requireUser } from '../../middleware/authenticate'
import { limitByClientIp } from '../../middleware/rate-limit'
import { routePolicy } from '../../middleware/route-policy'
import { json, jsonBody, problems } from '../../router'
import { EmailSchema, PasswordSchema, PrivateUserSchema, UsernameSchema } from '../account-schemas'
import { SignedInSchema, atPrimary, atPrimaryWithForms } from './auth.schemas'

// The account's own credentials and address: registering, the password, the email address.

const RegisterInput = z
  .object({ username: UsernameSchema, email: EmailSchema, password: PasswordSchema })
  .openapi('RegisterInput')

const PasswordChangeInput = z
  .object({ old_password: z.string().min(1).max(1024), new_password: PasswordSchema })
  .openapi('PasswordChangeInput')

const PasswordResetInput = z.object({ email: EmailSchema }).openapi('PasswordResetInput')

const PasswordResetConfirmInput = z
  .object({ token: z.string().min(1).max(512), new_password: PasswordSchema })
  .openapi('PasswordResetConfirmInput')

const EmailVerifyInput = z.object({ token: z.string().min(1).max(512) }).openapi('EmailVerifyInput')

const Accepted = z.object({ status: z.literal('accepted') }).openapi('Accepted')

// Registering adds a public profile, so it purges the edge cache.
export const register = createRoute({
  method: 'post',
  path: '/register',
  tags: ['Auth'],
  summary: 'Create an account',
  middleware: [
    routePolicy({ d1Primary: true, formBody: true, purgesEdgeCache: true }),
    limitByClientIp('register'),
  ] as const,
  request: { body: jsonBody(RegisterInput) },
  responses: {
    201: json(PrivateUserSchema, 'The new account (private view)'),
    ...problems(400, 409, 413, 415, 429),
  },
})

export const passwordChange = createRoute({
  method: 'post',
  path: '/password/change',
  tags: ['Auth'],
  summary: 'Change the password',
  description:
    'Returns a new token pair (a new session); every other session is revoked, and so is every ' +
    'outstanding password-reset link. Authenticated by the cookie-mode session cookie, it answers ' +
    'with new cookies instead of tokens.',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(PasswordChangeInput) },
  responses: {
    200: json(SignedInSchema, 'A new token pair, or in cookie mode the cookies'),
    ...problems(400, 401, 413, 415, 429, 503),
  },
})

export const passwordReset = createRoute({
  method: 'post',
  path: '/password/reset',
  tags: ['Auth'],
  summary: 'Email a password-reset link',
  description:
    'Always 202, whether or not the address has an account (no enumeration). The link carries a ' +
    'single-use token valid for 1 hour.',
  middleware: [atPrimaryWithForms, limitByClientIp('password-reset')] as const,
  request: { body: jsonBody(PasswordResetInput) },
  responses: {
    202: json(Accepted, 'If the address has an account, a link is on its way'),
    ...problems(400, 413, 415, 429),
  },
})

export const passwordResetConfirm = createRoute({
  method: 'post',
  path: '/password/reset/confirm',
  tags: ['Auth'],
  summary: 'Set a new password with a reset token',
  description:
    'The token works once, and only while the account still has the address it was mailed to; ' +
    'it spends every other reset link of the user, and every session of the user is revoked.',
  middleware: [atPrimaryWithForms, limitByClientIp('password-reset-confirm')] as const,
  request: { body: jsonBody(PasswordResetConfirmInput) },
  responses: { 204: { description: 'Password changed' }, ...problems(400, 413, 415, 429, 503) },
})

export const emailVerify = createRoute({
  method: 'post',
  path: '/email/verify',
  tags: ['Auth'],
  summary: 'Confirm an email address with the emailed token',
  middleware: [atPrimaryWithForms] as const,
  request: { body: jsonBody(EmailVerifyInput) },
  responses: { 204: { description: 'Email verified' }, ...problems(400, 413, 415) },
})

export const emailResend = createRoute({
  method: 'post',
  path: '/email/resend',
  tags: ['Auth'],
  summary: 'Send the verification email again',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  responses: {
    202: json(Accepted, 'A new link is on its way (nothing is sent if already verified)'),
    ...problems(401, 415, 429, 503),
  },
})
