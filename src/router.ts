import { OpenAPIHono, z } from '@hono/zod-openapi'
import type { RouteConfig, RouteHandler } from '@hono/zod-openapi'
import type { BatchItem } from 'drizzle-orm/batch'
import type { DrizzleD1Database } from 'drizzle-orm/d1'
import type { Config, Env } from './config'
import type * as schema from './db/schema'
import { ApiError, ProblemSchema } from './errors'
import type { FieldError } from './errors'
import type { BindingTimings } from './lib/timed-bindings'
import type { TokenKeys } from './lib/token-keys'

export type Db = DrizzleD1Database<typeof schema>

/** A non-empty list of statements for db.batch(), which D1 runs atomically. */
export type BatchStatements = [BatchItem<'sqlite'>, ...BatchItem<'sqlite'>[]]

export interface AppVariables {
  requestId: string
  config: Config
  tokenKeys: TokenKeys
  db: Db
  /** REVOKED_TOKENS, timed for Server-Timing. */
  kv: KVNamespace
  timings: BindingTimings
}

export interface AppEnv {
  Bindings: Env
  Variables: AppVariables
}

export type AppRouteHandler<R extends RouteConfig, E extends AppEnv = AppEnv> = RouteHandler<R, E>

/** Every resource router: zod failures become 400 `validation_failed` through the one onError. */
export function createRouter(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw validationFailed(result.error)
    },
  })
}

export function validationFailed(error: z.ZodError): ApiError {
  const errors: FieldError[] = error.issues.map((issue) => ({
    path: issue.path.map(String).join('.'),
    message: describeIssue(issue),
  }))
  const fields = [...new Set(errors.map((e) => e.path).filter((p) => p !== ''))]
  const detail =
    fields.length === 0 ? 'The request is invalid.' : `Invalid or missing: ${fields.join(', ')}.`
  return new ApiError(400, 'validation_failed', detail, { errors })
}

// zod's default messages quote received values for some issue kinds; these never do, so a
// password typed into the wrong field is not echoed back.
function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      // zod 4 leaves `input` out of issues; its message names only the received type.
      return /received undefined/.test(issue.message) ? 'is required' : `must be ${article(issue.expected)}`
    case 'too_small':
      return issue.origin === 'string'
        ? `must be at least ${String(issue.minimum)} characters`
        : `must be at least ${String(issue.minimum)}`
    case 'too_big':
      return issue.origin === 'string'
        ? `must be at most ${String(issue.maximum)} characters`
        : `must be at most ${String(issue.maximum)}`
    case 'invalid_format':
      if (issue.format === 'email') return 'must be a valid email address'
      // A pattern's own message (set where the schema is declared) explains the rule.
      return issue.format === 'regex' ? issue.message : `must be a valid ${issue.format}`
    case 'unrecognized_keys':
      return `unknown field(s): ${issue.keys.join(', ')}`
    case 'invalid_value':
      return `must be one of: ${issue.values.map(String).join(', ')}`
    default:
      return issue.message
  }
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`
}

/** ISO 8601 UTC timestamps, as every resource renders them. */
export const Timestamp = z.string().openapi({ format: 'date-time', example: '2026-11-23T07:00:00.000Z' })

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

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: 'Validation failed or malformed body (`validation_failed`)',
  401: 'Missing, invalid, expired or revoked credentials',
  403: 'Authenticated but not allowed (`forbidden`)',
  404: 'Not found (`not_found`)',
  405: 'Method not allowed (`method_not_allowed`); see Allow',
  409: 'Conflict (`username_taken`, `email_taken`, `conflict`)',
  413: 'Body over 64 KiB (`payload_too_large`)',
  415: 'Unsupported Content-Type (`unsupported_media_type`)',
  429: 'Rate limited (`rate_limited`); see Retry-After',
  500: 'Server error or misconfiguration (`internal_error`)',
  503: 'A dependency (D1 or KV) is unreachable (`service_unavailable`)',
}

/** Problem+json response entries for the given statuses. */
export function problems<S extends number>(...statuses: S[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      {
        content: { 'application/problem+json': { schema: ProblemSchema } },
        description: PROBLEM_DESCRIPTIONS[status] ?? 'Error',
      },
    ]),
  ) as Record<S, { content: { 'application/problem+json': { schema: typeof ProblemSchema } }; description: string }>
}
