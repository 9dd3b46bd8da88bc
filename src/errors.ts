import { z } from '@hono/zod-openapi'
import type { Context, ErrorHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { ContentfulStatusCode } from 'hono/utils/http-status'

/** Stable machine-readable codes (API.md § Errors). Clients switch on these, never on `detail`. */
export const ERROR_CODES = [
  'validation_failed',
  'invalid_credentials',
  'not_authenticated',
  'token_invalid',
  'token_expired',
  'token_revoked',
  'token_reused',
  'forbidden',
  'not_found',
  'conflict',
  'username_taken',
  'email_taken',
  'rate_limited',
  'payload_too_large',
  'unsupported_media_type',
  'method_not_allowed',
  'service_unavailable',
  'internal_error',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

export interface FieldError {
  path: string
  message: string
}

interface ApiErrorExtra {
  errors?: FieldError[]
  headers?: Record<string, string>
  cause?: unknown
}

/** The one error type of the API. Thrown anywhere; rendered to problem+json only by `problemResponse`. */
export class ApiError extends Error {
  override readonly name = 'ApiError'

  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: ErrorCode,
    readonly detail: string,
    readonly extra: ApiErrorExtra = {},
  ) {
    super(detail, { cause: extra.cause })
  }
}

export const FieldErrorSchema = z.object({
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

/** Translates anything thrown into an ApiError; unknown errors become an opaque 500. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err
  if (err instanceof HTTPException) {
    const known = HTTP_EXCEPTION_CODES[err.status]
    if (known !== undefined) {
      const malformedJson = err.status === 400 && /json/i.test(err.message)
      return malformedJson
        ? new ApiError(400, 'validation_failed', 'The request body is not valid JSON.', {
            errors: [{ path: '', message: 'is not valid JSON' }],
          })
        : new ApiError(err.status as ContentfulStatusCode, known.code, known.detail)
    }
  }
  return new ApiError(500, 'internal_error', 'An unexpected error occurred.', { cause: err })
}

export function toProblem(error: ApiError, requestId?: string): Problem {
  return {
    type: 'about:blank',
    title: TITLES[error.status] ?? 'Error',
    status: error.status,
    detail: error.detail,
    code: error.code,
    ...(error.extra.errors === undefined ? {} : { errors: error.extra.errors }),
    ...(requestId === undefined ? {} : { request_id: requestId }),
  }
}

export const notAuthenticated = (): ApiError =>
  new ApiError(401, 'not_authenticated', 'Authentication is required: send an access token.')

export const forbidden = (detail = 'You may not act on this resource.'): ApiError =>
  new ApiError(403, 'forbidden', detail)

export const notFound = (what = 'resource'): ApiError =>
  new ApiError(404, 'not_found', `The ${what} does not exist.`)

const TOKEN_CODES: ReadonlySet<ErrorCode> = new Set([
  'token_invalid',
  'token_expired',
  'token_revoked',
  'token_reused',
])

// RFC 6750 §3: every 401 names the scheme; when a token was presented and refused, it also says
// why, so clients can tell "log in again" from "refresh".
function challengeFor(error: ApiError): string | undefined {
  if (error.status !== 401) return undefined
  if (!TOKEN_CODES.has(error.code)) return 'Bearer realm="api"'
  const description = error.detail.replace(/["\\]/g, '')
  return `Bearer realm="api", error="invalid_token", error_description="${description}"`
}

/** The only place an error becomes a response body. */
export function problemResponse(c: Context, error: ApiError): Response {
  const challenge = challengeFor(error)
  const headers: Record<string, string> = {
    'Content-Type': 'application/problem+json',
    'Cache-Control': 'no-store',
    ...(challenge === undefined ? {} : { 'WWW-Authenticate': challenge }),
    ...error.extra.headers,
  }
  const requestId = c.get('requestId') as string | undefined
  return c.newResponse(JSON.stringify(toProblem(error, requestId)), error.status, headers)
}

export const onError: ErrorHandler = (err, c) => {
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
      reason: inner?.message ?? (cause instanceof Error && cause.name !== 'DrizzleQueryError' ? cause.message : undefined),
    }),
  )
}
