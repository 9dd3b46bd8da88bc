import { OpenAPIHono, z } from '@hono/zod-openapi'
import type { RouteConfig, RouteHandler } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { AppEnv } from './app-env'
import { ProblemSchema, validationFailed } from './errors'
import type { ErrorStatus } from './lib/api-error'
import { createMailer } from './email/mailer'
import type { Mailer } from './email/mailer'
import type { SessionDeps } from './sessions/deps'

export type { AdminEnv, AppEnv, AppVariables, AuthedEnv, OptionalAuthEnv } from './app-env'

/** Where the API lives; only /openapi.json, /docs and /.well-known/ sit outside it. */
export const API_PREFIX = '/api/v1'

export type AppRouteHandler<R extends RouteConfig, E extends AppEnv = AppEnv> = RouteHandler<R, E>

/** What the login-session layer (src/sessions/) needs from a request: its D1, KV, keys and config. */
export function sessionDeps<E extends AppEnv>(c: Context<E>): SessionDeps {
  return { db: c.get('db'), revocations: c.get('revocations'), keys: c.get('tokenKeys'), config: c.get('config') }
}

/** The request's Mailer: queues mail some transport may deliver from here, and delivers it after the response. */
export function mailerOf<E extends AppEnv>(c: Context<E>): Mailer {
  return createMailer({
    config: c.get('config'),
    requestUrl: c.req.url,
    executionCtx: executionContextOf(c),
    bindings: c.env,
  })
}

/**
 * The request's execution context, for work after the response (email delivery); undefined when
 * the app is called without one (app.request() in scripts), where the cron does that work.
 */
export function executionContextOf(c: Context): ExecutionContext | undefined {
  try {
    return c.executionCtx
  } catch {
    return undefined
  }
}

/**
 * Every resource router: zod failures become 400 `validation_failed` through the one onError.
 * It must not set an onError of its own (see src/middleware/route-policy.ts).
 */
export function createRouter(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw validationFailed(result.error)
    },
  })
}

/** ISO 8601 UTC timestamps, as every resource renders them. */
export const Timestamp = z.string().openapi({ format: 'date-time', example: '2026-11-23T07:00:00.000Z' })

/**
 * The `{id}` path parameter. It stays a string here: an id that is not a positive integer names no
 * row, so the handler answers 404 (src/lib/ids.ts), not 400.
 */
export function idParams(example: string) {
  return z.object({ id: z.string().openapi({ param: { name: 'id', in: 'path' }, example }) })
}

/** The ETag header of single public resources. */
export const ETAG_HEADER = { ETag: { schema: { type: 'string' as const }, description: 'Strong validator' } }

/** A required JSON request body. */
export function jsonBody<T extends z.ZodType>(schema: T) {
  return { required: true, content: { 'application/json': { schema } } }
}

/** A JSON response entry for a route's `responses`. */
export function json<T extends z.ZodType>(schema: T, description: string) {
  return { content: { 'application/json': { schema } }, description }
}

const PROBLEM_DESCRIPTIONS: Record<ErrorStatus, string> = {
  400: 'Validation failed or malformed body (`validation_failed`)',
  401: 'Missing, invalid, expired or revoked credentials',
  403: 'Authenticated but not allowed (`forbidden`), or the sign-in is too old for this change (`reauthentication_required`)',
  404: 'Not found (`not_found`)',
  405: 'Method not allowed (`method_not_allowed`); see Allow',
  409: 'Conflict (`username_taken`, `email_taken`, `slug_taken`, `conflict`)',
  413: 'Body over 64 KiB (`payload_too_large`)',
  415: 'Unsupported Content-Type (`unsupported_media_type`)',
  429: 'Rate limited (`rate_limited`); see Retry-After',
  500: 'Server error or misconfiguration (`internal_error`)',
  503: 'A dependency (D1 or KV) is unreachable (`service_unavailable`)',
}

/** Problem+json response entries for the given statuses. */
export function problems<S extends ErrorStatus>(...statuses: S[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      {
        content: { 'application/problem+json': { schema: ProblemSchema } },
        description: PROBLEM_DESCRIPTIONS[status],
      },
    ]),
  ) as Record<S, { content: { 'application/problem+json': { schema: typeof ProblemSchema } }; description: string }>
}
