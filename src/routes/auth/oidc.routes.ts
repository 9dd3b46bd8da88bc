import { createRoute, z } from '@hono/zod-openapi'
import { requireRecentSignIn, requireUser } from '../../middleware/authenticate'
import { limitByClientIp } from '../../middleware/rate-limit'
import { json, jsonBody, problems } from '../../router'
import { CookieModeQuery, SignedInSchema, atPrimary } from './auth.schemas'

// Native sign-in with OpenID Connect providers (Sign in with Apple, Google): the app runs the
// provider's own flow and sends the ID token it got; docs/design.md § Native sign-in (OIDC).

const ProviderParams = z.object({
  provider: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: 'provider', in: 'path' }, example: 'apple' }),
})

const IdTokenInput = z
  .object({
    id_token: z.string().min(1).max(8192),
    nonce: z.string().min(1).max(512).optional().openapi({ description: 'The raw nonce the app generated' }),
  })
  .openapi('IdTokenInput')

export const signIn = createRoute({
  method: 'post',
  path: '/oidc/{provider}',
  tags: ['Auth'],
  summary: 'Sign in with an ID token (Apple, Google)',
  description:
    'The answer of POST /auth/token (200), for a linked identity, an account with the same email linked when both ' +
    'sides verified it, or a new account; 409 `account_exists` when the address has an account that cannot be linked. ' +
    'Any bad token or unknown provider: 401 `token_invalid`. Second factor: as POST /auth/token.',
  middleware: [atPrimary, limitByClientIp('oidc')] as const,
  request: { params: ProviderParams, query: CookieModeQuery, body: jsonBody(IdTokenInput) },
  responses: {
    200: json(SignedInSchema, 'Signed in: the token pair, or in cookie mode the cookies'),
    ...problems(400, 401, 403, 409, 413, 415, 429, 503),
  },
})

export const link = createRoute({
  method: 'post',
  path: '/oidc/{provider}/link',
  tags: ['Auth'],
  summary: 'Link a provider account to the signed-in account',
  description:
    'Needs a recent sign-in (`auth_time` within REAUTH_MAX_AGE; else 403 `reauthentication_required`); the owner ' +
    'is told by email. Idempotent; an identity linked elsewhere, or a second one at the same provider: 409 `conflict`.',
  middleware: [atPrimary, requireUser(), requireRecentSignIn()] as const,
  security: [{ Bearer: [] }],
  request: { params: ProviderParams, body: jsonBody(IdTokenInput) },
  responses: { 204: { description: 'Linked' }, ...problems(400, 401, 403, 409, 413, 415, 429, 503) },
})

export const unlink = createRoute({
  method: 'delete',
  path: '/oidc/{provider}/link',
  tags: ['Auth'],
  summary: 'Unlink a provider from the signed-in account',
  description: 'The last way to sign in (no password, no other provider) cannot be removed: 409 `conflict`.',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { params: ProviderParams },
  responses: { 204: { description: 'Unlinked' }, ...problems(401, 404, 409, 429, 503) },
})
