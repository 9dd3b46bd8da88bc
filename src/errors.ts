import { z } from '@hono/zod-openapi'
import type { Context, ErrorHandler } from 'hono'
import type { AppEnv } from './app-env'
import { HTTPException } from 'hono/http-exception'
import { NO_STORE } from './http/conditional-get'
import { ApiError, ERROR_CODES, notFound } from './lib/api-error'
import type { ErrorCode, ErrorStatus, FieldError } from './lib/api-error'
import { outageIn, outageProblem } from './lib/outages'

// The one place where anything thrown becomes an RFC 9457 problem+json response: ApiError as it
// is, zod validation issues and Hono's HTTPExceptions translated, anything else an opaque 500.

const FieldErrorSchema = z.object({
  path: z.string().openapi({ example: 'password' }),
  message: z.string().openapi({ example: 'must be at least 8 characters' }),
})

export const ProblemSchema = z
  .object({
    type: z.string().openapi({ example: 'about:blank' }),
    title: z.string().openapi({ example: 'Bad Request' }),
    status: z.number().int().openapi({ example: 400 }),
    detail: z.string().openapi({ example: 'The request body is invalid.' }),
    code: z.enum(ERROR_CODES).openapi({ example: 'validation_failed' }),
    errors: z.array(FieldErrorSchema).optional(),
    request_id: z.string().optional(),
    mfa_token: z
      .string()
      .optional()
      .openapi({ description: 'With `mfa_required`: the token for POST /api/v1/auth/mfa/verify' }),
  })
  .openapi('Problem', { description: 'RFC 9457 problem details' })

export type Problem = z.infer<typeof ProblemSchema>

const TITLES: Partial<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

const HTTP_EXCEPTION_CODES: Partial<Record<number, { code: ErrorCode; detail: string }>> = {
  400: { code: 'validation_failed', detail: 'The request body could not be parsed.' },
  413: { code: 'payload_too_large', detail: 'The request body is larger than 64 KiB.' },
  415: {
    code: 'unsupported_media_type',
    detail: 'Send the request body as application/json.',
  },
}

/**
 * Translates anything thrown into an ApiError: an outage of D1 or KV is a 503 the client may retry
 * (src/lib/outages.ts); anything else unknown is a bug, an opaque 500.
 */
function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err
  const outage = outageIn(err)
  if (outage !== undefined) return outageProblem(outage)
  if (err instanceof HTTPException) {
    const known = HTTP_EXCEPTION_CODES[err.status]
    if (known !== undefined) {
      const malformedJson = err.status === 400 && /json/i.test(err.message)
      return malformedJson
        ? new ApiError(400, 'validation_failed', 'The request body is not valid JSON.', {
            errors: [{ path: '', message: 'is not valid JSON' }],
          })
        : new ApiError(err.status as ErrorStatus, known.code, known.detail)
    }
  }
  return new ApiError(500, 'internal_error', 'An unexpected error occurred.', { cause: err })
}

/** zod issues → 400 `validation_failed` naming each field in `errors[].path`. */
export function validationFailed(error: z.ZodError): ApiError {
  const errors: FieldError[] = error.issues.map((issue) => ({
    path: issue.path.map(String).join('.'),
    message: describeIssue(issue),
  }))
  const fields = [...new Set(errors.map((e) => e.path).filter((p) => p !== ''))]
  const detail = fields.length === 0 ? 'The request is invalid.' : `Invalid or missing: ${fields.join(', ')}.`
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

function toProblem(error: ApiError, requestId?: string): Problem {
  return {
    type: 'about:blank',
    title: TITLES[error.status] ?? 'Error',
    status: error.status,
    detail: error.detail,
    code: error.code,
    ...(error.extra.errors === undefined ? {} : { errors: error.extra.errors }),
    ...error.extra.members,
    ...(requestId === undefined ? {} : { request_id: requestId }),
  }
}

const TOKEN_CODES: ReadonlySet<ErrorCode> = new Set(['token_invalid', 'token_expired', 'token_revoked', 'token_reused'])

// RFC 6750 §3: every 401 names the scheme; when a token was presented and refused, it also says
// why, so clients can tell "log in again" from "refresh".
function challengeFor(error: ApiError): string | undefined {
  if (error.status !== 401) return undefined
  if (!TOKEN_CODES.has(error.code)) return 'Bearer realm="api"'
  const description = error.detail.replace(/["\\]/g, '')
  return `Bearer realm="api", error="invalid_token", error_description="${description}"`
}

/** The only place an error becomes a response body. */
function problemResponse(c: Context, error: ApiError): Response {
  const challenge = challengeFor(error)
  const headers: Record<string, string> = {
    'Content-Type': 'application/problem+json',
    'Cache-Control': NO_STORE,
    ...(challenge === undefined ? {} : { 'WWW-Authenticate': challenge }),
    ...error.extra.headers,
  }
  const requestId = c.get('requestId') as string | undefined
  const body = JSON.stringify(toProblem(error, requestId))
  if (error.extra.discardsResponse !== true) return c.newResponse(body, error.status, headers)
  // Nothing the route set survives (Location, Set-Cookie, ETag…): the context forgets its
  // response, and this one starts from the request id alone. Outer middleware add their headers.
  c.res = undefined
  return new Response(body, {
    status: error.status,
    headers: { ...headers, ...(requestId === undefined ? {} : { 'X-Request-Id': requestId }) },
  })
}

/** Unknown routes: 404 `not_found`. */
export function onNotFound(c: Context): Response {
  return problemResponse(c, notFound('route'))
}

/** A known route with another method: 405 `method_not_allowed` with Allow. */
export function onMethodNotAllowed(c: Context, methods: string[]): Response {
  return problemResponse(
    c,
    new ApiError(405, 'method_not_allowed', `Use one of: ${methods.join(', ')}.`, {
      headers: { Allow: methods.join(', ') },
    }),
  )
}

export const onError: ErrorHandler<AppEnv> = (err, c) => {
  const error = toApiError(err)
  if (error.status >= 500) logServerError(c, error)
  return problemResponse(c, error)
}

// Only names and D1's own message are logged: drizzle's messages quote the bound parameters,
// which can be password hashes or emails.
function logServerError(c: Context, error: ApiError): void {
  const cause = error.cause
  const inner = cause instanceof Error && cause.cause instanceof Error ? cause.cause : undefined
  console.error(
    JSON.stringify({
      level: 'error',
      request_id: c.get('requestId') as string | undefined,
      method: c.req.method,
      path: c.req.path,
      code: error.code,
      detail: error.detail,
      error: cause instanceof Error ? cause.name : undefined,
      reason:
        inner?.message ?? (cause instanceof Error && cause.name !== 'DrizzleQueryError' ? cause.message : undefined),
    }),
  )
}
