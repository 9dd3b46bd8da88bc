import { createRoute, z } from '@hono/zod-openapi'
import { requireUser } from '../../middleware/authenticate'
import { limitByClientIp } from '../../middleware/rate-limit'
import { json, jsonBody, problems } from '../../router'
import { CookieModeQuery, SignedInSchema, atPrimary, atPrimaryWithForms, replicaFirstWithForms } from './auth.schemas'
import { PasskeyAssertionInput } from './passkeys.routes'

// Signing in and out with a password, and the token pair's life: refresh, verify, logout.

export const CredentialsInput = z
  .object({
    username: z.string().min(1).max(254).openapi({ description: 'Username or email address', example: 'alice' }),
    password: z.string().min(1).max(1024).openapi({ format: 'password', example: 'correct horse battery staple' }),
  })
  .openapi('Credentials')

const RefreshInput = z
  .object({
    refresh_token: z.string().min(1).max(8192).optional().openapi({ description: 'Required unless in cookie mode' }),
  })
  .openapi('RefreshInput')

const VerifyInput = z.object({ token: z.string().min(1).max(8192) }).openapi('VerifyInput')

const LogoutInput = z.object({ refresh_token: z.string().min(1).max(8192).optional() }).openapi('LogoutInput')

const VerifiedToken = z
  .object({
    token_type: z.enum(['access', 'refresh']),
    sub: z.string().openapi({ example: '1' }),
    exp: z.number().int().openapi({ description: 'Expiry, epoch seconds' }),
  })
  .openapi('VerifiedToken')

export const token = createRoute({
  method: 'post',
  path: '/token',
  tags: ['Auth'],
  summary: 'Log in: exchange credentials for a token pair',
  description:
    'Credentials as a JSON or form body `{username, password}` (username may be the email), ' +
    'or HTTP Basic with no body. Unknown user and wrong password get the same 401. An account with a ' +
    'second factor answers 401 `mfa_required` with an `mfa_token` for POST /auth/mfa/verify.',
  // {} makes HTTP Basic optional: the credentials may come in the body instead.
  security: [{}, { Basic: [] }] as Array<Record<string, string[]>>,
  middleware: [replicaFirstWithForms, limitByClientIp('token')] as const,
  request: {
    query: CookieModeQuery,
    body: { required: false, content: { 'application/json': { schema: CredentialsInput } } },
  },
  responses: {
    200: json(SignedInSchema, 'A new session: its token pair, or in cookie mode the cookies'),
    ...problems(400, 401, 403, 413, 415, 429),
  },
})

export const login = createRoute({ ...token, path: '/login', summary: 'Alias of POST /auth/token' })

export const refresh = createRoute({
  method: 'post',
  path: '/token/refresh',
  tags: ['Auth'],
  summary: 'Rotate a refresh token',
  description:
    'Returns a new pair and revokes the presented refresh token. Presenting an already-rotated ' +
    'token is reuse: 401 `token_reused` and the whole session is revoked, except within ' +
    '`REFRESH_REUSE_GRACE` seconds of its rotation, where the current refresh token (same jti) ' +
    'and a fresh access token are returned. In cookie mode (`?mode=cookie`) the refresh token may ' +
    'come from its cookie instead of the body; then `X-CSRF-Token` is required and new cookies are set.',
  middleware: [atPrimaryWithForms] as const,
  request: {
    query: CookieModeQuery,
    body: { required: false, content: { 'application/json': { schema: RefreshInput } } },
  },
  responses: {
    200: json(SignedInSchema, 'The next token pair, or in cookie mode the cookies'),
    ...problems(400, 401, 403, 413, 415),
  },
})

export const verify = createRoute({
  method: 'post',
  path: '/token/verify',
  tags: ['Auth'],
  summary: 'Check a token',
  middleware: [atPrimaryWithForms] as const,
  request: { body: jsonBody(VerifyInput) },
  responses: {
    200: json(VerifiedToken, 'The token is valid and not revoked'),
    ...problems(400, 401, 413, 415, 503),
  },
})

export const logout = createRoute({
  method: 'post',
  path: '/logout',
  tags: ['Auth'],
  summary: 'End this session',
  description:
    "The access token and its session's refresh token stop working at once. Only this session " +
    'ends (a refresh_token of another session in the body is ignored); see logout-all for every session.',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { body: { required: false, content: { 'application/json': { schema: LogoutInput } } } },
  responses: {
    204: { description: 'Logged out' },
    ...problems(400, 401, 413, 415, 429, 503),
  },
})

export const logoutAll = createRoute({
  method: 'post',
  path: '/logout-all',
  tags: ['Auth'],
  summary: 'End every session of the user',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  responses: {
    204: { description: 'Every session revoked' },
    ...problems(401, 415, 429, 503),
  },
})

const ReauthenticateInput = z
  .object({
    password: z.string().min(1).max(1024).optional().openapi({ format: 'password' }),
    code: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .openapi({ description: 'A code from the authenticator app, or a recovery code', example: '123456' }),
    provider: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .openapi({ description: 'A linked sign-in provider', example: 'apple' }),
    id_token: z.string().min(1).max(8192).optional().openapi({ description: 'An ID token of that provider' }),
    nonce: z.string().min(1).max(512).optional(),
    passkey: PasskeyAssertionInput.optional().openapi({
      description: 'An assertion of one of your passkeys, for a challenge of POST /auth/passkeys/login/options',
    }),
  })
  .refine(
    (input) =>
      [input.password, input.code, input.provider, input.passkey].filter((given) => given !== undefined).length === 1 &&
      (input.provider === undefined) === (input.id_token === undefined),
    { message: 'give exactly one of password, code, passkey, or provider with id_token' },
  )
  .openapi('ReauthenticateInput')

export const reauthenticate = createRoute({
  method: 'post',
  path: '/reauthenticate',
  tags: ['Auth'],
  summary: 'Prove who you are again, for a change that needs a recent sign-in',
  description:
    'Lasting changes (linking a provider, turning on two-factor sign-in, new recovery codes, a new email address, ' +
    "deleting the account) need the session's `auth_time` within `REAUTH_MAX_AGE` seconds; otherwise they answer " +
    '403 `reauthentication_required`. This answers a new token pair for the same session (cookies in cookie mode) ' +
    'whose `auth_time` is now, given the password, a code of the second factor (or a recovery code), an assertion ' +
    'of one of your passkeys, or an ID token of a linked provider. Accounts without a password step up with a ' +
    'passkey, a provider or their second factor.',
  middleware: [atPrimary, requireUser(), limitByClientIp('reauthenticate')] as const,
  security: [{ Bearer: [] }],
  request: { body: jsonBody(ReauthenticateInput) },
  responses: {
    200: json(SignedInSchema, 'The session continues with a fresh auth_time: its token pair, or the cookies'),
    ...problems(400, 401, 403, 409, 413, 415, 429, 503),
  },
})
