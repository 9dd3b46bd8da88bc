import { createRoute, z } from '@hono/zod-openapi'
import { requireRecentSignIn, requireUser } from '../../middleware/authenticate'
import { limitByClientIp } from '../../middleware/rate-limit'
import { json, jsonBody, problems } from '../../router'
import { CookieModeQuery, SignedInSchema, atPrimary, atPrimaryWithForms } from './auth.schemas'

// Two-factor sign-in with TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps), opt-in per account.

const Code = z
  .string()
  .regex(/^[0-9]{6}$/, { message: 'must be the 6 digits your authenticator app shows' })
  .openapi({ example: '123456' })

const RecoveryCodes = z
  .object({
    recovery_codes: z.array(z.string().openapi({ example: 'k3m9-7q2x-a8vd-h4pw' })).openapi({
      description: 'Ten single-use codes, shown this once: each signs in once instead of a code',
    }),
  })
  .openapi('RecoveryCodes')

const Enrolment = z
  .object({
    secret: z.string().openapi({ description: 'Base32 TOTP secret', example: 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP' }),
    otpauth_uri: z.string().openapi({
      example: 'otpauth://totp/edgepress:alice?secret=…&issuer=edgepress&algorithm=SHA1&digits=6&period=30',
    }),
  })
  .openapi('TotpEnrolment')

const CodeInput = z.object({ code: Code }).openapi('TotpCodeInput')

const RecoveryCode = z.string().min(1).max(64).openapi({ example: 'k3m9-7q2x-a8vd-h4pw' })

const exactlyOneCode = (input: { code?: string | undefined; recovery_code?: string | undefined }) =>
  (input.code === undefined) !== (input.recovery_code === undefined)

const DisableInput = z
  .object({
    password: z
      .string()
      .min(1)
      .max(1024)
      .optional()
      .openapi({ description: 'Required when the account has a password' }),
    code: Code.optional(),
    recovery_code: RecoveryCode.optional(),
  })
  .refine(exactlyOneCode, { message: 'give exactly one of code, recovery_code' })
  .openapi('TotpDisableInput')

const VerifyInput = z
  .object({
    mfa_token: z.string().min(1).max(4096),
    code: Code.optional(),
    recovery_code: RecoveryCode.optional(),
  })
  .refine(exactlyOneCode, { message: 'give exactly one of code, recovery_code' })
  .openapi('MfaVerifyInput')

export const enroll = createRoute({
  method: 'post',
  path: '/mfa/totp',
  tags: ['Auth'],
  summary: 'Start enrolling a TOTP factor',
  description:
    'Needs a recent sign-in (`auth_time` within REAUTH_MAX_AGE; else 403 `reauthentication_required`). ' +
    'A new secret and the otpauth:// URI authenticator apps read (as a QR code). The factor is active only ' +
    'after POST /auth/mfa/totp/confirm with a valid code; calling this again replaces an unconfirmed secret.',
  middleware: [atPrimary, requireUser(), requireRecentSignIn()] as const,
  security: [{ Bearer: [] }],
  responses: { 200: json(Enrolment, 'The secret, shown once'), ...problems(401, 403, 409, 415, 429, 500, 503) },
})

export const confirm = createRoute({
  method: 'post',
  path: '/mfa/totp/confirm',
  tags: ['Auth'],
  summary: 'Turn the TOTP factor on with a first code',
  description:
    'Needs a recent sign-in. Every other session of the user ends, and a security email goes out. ' +
    'The ten recovery codes are shown this once.',
  middleware: [atPrimary, requireUser(), requireRecentSignIn()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(CodeInput) },
  responses: {
    200: json(RecoveryCodes, 'The factor is on; the recovery codes'),
    ...problems(400, 401, 403, 409, 413, 415, 429, 503),
  },
})

export const disable = createRoute({
  method: 'delete',
  path: '/mfa/totp',
  tags: ['Auth'],
  summary: 'Turn the TOTP factor off (password and a code or recovery code); every other session ends',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(DisableInput) },
  responses: { 204: { description: 'The factor is off' }, ...problems(400, 401, 409, 413, 415, 429, 503) },
})

export const regenerateRecoveryCodes = createRoute({
  method: 'post',
  path: '/mfa/recovery-codes',
  tags: ['Auth'],
  summary: 'Replace the recovery codes (a current code and a recent sign-in required)',
  middleware: [atPrimary, requireUser(), requireRecentSignIn()] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(CodeInput) },
  responses: {
    200: json(RecoveryCodes, 'The new recovery codes; the old ones no longer work'),
    ...problems(400, 401, 403, 409, 413, 415, 429, 503),
  },
})

export const verify = createRoute({
  method: 'post',
  path: '/mfa/verify',
  tags: ['Auth'],
  summary: "Log in, second step: the password step's mfa_token and a code (or a recovery code)",
  description:
    'When the account has a second factor, POST /auth/token (or /login) answers 401 `mfa_required` with an ' +
    '`mfa_token` (valid 5 minutes, accepted nowhere else). Send it here with the current 6-digit code, or with ' +
    'one of the recovery codes, for the token pair (or, with `?mode=cookie`, the session cookies). Wrong codes ' +
    'count against the account: 5 in 15 minutes and codes are refused (429) until the window ends.',
  middleware: [atPrimaryWithForms, limitByClientIp('mfa-verify')] as const,
  request: { query: CookieModeQuery, body: jsonBody(VerifyInput) },
  responses: {
    200: json(SignedInSchema, 'A new session: its token pair, or in cookie mode the cookies'),
    ...problems(400, 401, 403, 413, 415, 429),
  },
})
