import { z } from '@hono/zod-openapi'
import { routePolicy } from '../../middleware/route-policy'

// What the /auth routes share: their route policy and the answer of every route that signs in.

/**
 * Every /auth route reads sessions, tokens and passwords that must not be stale, so its D1 session
 * starts at the primary: each declares one of these as the first entry of its `middleware`
 * (src/middleware/bindings.test.ts checks them all). The endpoints a plain HTML form may post to
 * (docs/API.md, precise point 6) also take form bodies.
 */
export const atPrimary = routePolicy({ d1Primary: true })
export const atPrimaryWithForms = routePolicy({ d1Primary: true, formBody: true })
/** Login: the account is read near the client, and the session's write re-checks it at the primary. */
export const replicaFirstWithForms = routePolicy({ d1Primary: true, d1ReplicaFirst: true, formBody: true })

export const CookieModeQuery = z.object({
  mode: z
    .enum(['cookie'])
    .optional()
    .openapi({
      description:
        'cookie: set the tokens as __Host- HttpOnly cookies instead of returning them (web apps); ' +
        'state-changing requests authenticated by cookie must then send X-CSRF-Token',
    }),
})

export const TokenPairSchema = z
  .object({
    access_token: z.string(),
    refresh_token: z.string(),
    token_type: z.literal('Bearer'),
    expires_in: z.number().int().openapi({ example: 300 }),
    refresh_expires_in: z.number().int().openapi({ example: 86_400 }),
  })
  .openapi('TokenPair')

/** What cookie mode answers instead of the tokens, which it sets as cookies. */
export const CookieModeAnswerSchema = z
  .object({
    token_type: z.literal('Cookie'),
    expires_in: z.number().int(),
    refresh_expires_in: z.number().int(),
    csrf_token: z.string().openapi({ description: 'Send as X-CSRF-Token on POST/PUT/PATCH/DELETE' }),
  })
  .openapi('CookieSession')

/** The answer of every route that signs in: the token pair, or in cookie mode the cookies. */
export const SignedInSchema = z.union([TokenPairSchema, CookieModeAnswerSchema])
