import { createRoute, z } from '@hono/zod-openapi'
import { requireUser } from '../../middleware/authenticate'
import { limitByClientIp } from '../../middleware/rate-limit'
import { routePolicy } from '../../middleware/route-policy'
import { json, jsonBody, problems } from '../../router'
import { EmailSchema, PasswordSchema, PrivateUserSchema, UsernameSchema } from '../account-schemas'

// Every auth route reads sessions, tokens and passwords that must not be stale: its D1 session
// starts at the primary. The endpoints a plain HTML form may post to (docs/API.md, precise point 6)
// also take form bodies; registering adds a public profile, so it purges the edge cache.
export const atPrimary = routePolicy({ d1Primary: true })
export const atPrimaryWithForms = routePolicy({ d1Primary: true, formBody: true })

const RegisterInput = z
  .object({ username: UsernameSchema, email: EmailSchema, password: PasswordSchema })
  .openapi('RegisterInput')

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

const CookieModeQuery = z.object({
  mode: z
    .enum(['cookie'])
    .optional()
    .openapi({
      description:
        'cookie: set the tokens as __Host- HttpOnly cookies instead of returning them (web apps); ' +
        'state-changing requests authenticated by cookie must then send X-CSRF-Token',
    }),
})

export const CookieSessionSchema = z
  .object({
    token_type: z.literal('Cookie'),
    expires_in: z.number().int(),
    refresh_expires_in: z.number().int(),
    csrf_token: z.string().openapi({ description: 'Send as X-CSRF-Token on POST/PUT/PATCH/DELETE' }),
  })
  .openapi('CookieSession')

const VerifyInput = z.object({ token: z.string().min(1).max(8192) }).openapi('VerifyInput')

const LogoutInput = z.object({ refresh_token: z.string().min(1).max(8192).optional() }).openapi('LogoutInput')

export const TokenPairSchema = z
  .object({
    access_token: z.string(),
    refresh_token: z.string(),
    token_type: z.literal('Bearer'),
    expires_in: z.number().int().openapi({ example: 300 }),
    refresh_expires_in: z.number().int().openapi({ example: 86_400 }),
  })
  .openapi('TokenPair')

const VerifiedToken = z
  .object({
    token_type: z.enum(['access', 'refresh']),
    sub: z.string().openapi({ example: '1' }),
    exp: z.number().int().openapi({ description: 'Expiry, epoch seconds' }),
  })
  .openapi('VerifiedToken')

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
  middleware: [atPrimaryWithForms, limitByClientIp('token')] as const,
  request: {
    query: CookieModeQuery,
    body: { required: false, content: { 'application/json': { schema: CredentialsInput } } },
  },
  responses: {
    200: json(
      z.union([TokenPairSchema, CookieSessionSchema]),
      'A new session: its token pair, or in cookie mode the cookies',
    ),
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
    200: json(z.union([TokenPairSchema, CookieSessionSchema]), 'The next token pair, or in cookie mode the cookies'),
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
