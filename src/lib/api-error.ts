/** Stable machine-readable codes (docs/API.md § Errors). Clients switch on these, never on `detail`. */
export const ERROR_CODES = [
  'validation_failed',
  'invalid_credentials',
  'mfa_required',
  'not_authenticated',
  'token_invalid',
  'token_expired',
  'token_revoked',
  'token_reused',
  'signature_invalid',
  'forbidden',
  'reauthentication_required',
  'not_found',
  'conflict',
  'username_taken',
  'email_taken',
  'slug_taken',
  'newsletter_exists',
  'passkey_exists',
  'passkey_rejected',
  'post_not_published',
  'account_exists',
  'rate_limited',
  'payload_too_large',
  'unsupported_media_type',
  'method_not_allowed',
  'service_unavailable',
  'internal_error',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

/** Every status the API answers with a problem (docs/API.md § Errors). */
export type ErrorStatus = 400 | 401 | 403 | 404 | 405 | 409 | 413 | 415 | 429 | 500 | 503

export interface FieldError {
  path: string
  message: string
}

interface ApiErrorExtra {
  errors?: FieldError[]
  /** Extension members of the problem body (RFC 9457 § 3.2), e.g. `mfa_token`. */
  members?: { mfa_token?: string }
  headers?: Record<string, string>
  cause?: unknown
  /**
   * The problem replaces whatever the route had answered, headers included (a request refused
   * after its handler ran: a revoked token, an exhausted write limit).
   */
  discardsResponse?: true
}

/**
 * The one error type of the API. Thrown anywhere, by handlers and by the primitives and data
 * modules below them; turned into problem+json only in src/errors.ts.
 */
export class ApiError extends Error {
  override readonly name = 'ApiError'

  constructor(
    readonly status: ErrorStatus,
    readonly code: ErrorCode,
    readonly detail: string,
    readonly extra: ApiErrorExtra = {},
  ) {
    super(detail, { cause: extra.cause })
  }
}

export const notAuthenticated = (): ApiError =>
  new ApiError(401, 'not_authenticated', 'Authentication is required: send an access token.')

/** A valid token whose subject names no user (anymore): refused as a bad token (docs/API.md, precise point 2). */
export const userGone = (): ApiError =>
  new ApiError(401, 'token_invalid', 'The token names a user that does not exist.')

export const forbidden = (detail = 'You may not act on this resource.'): ApiError =>
  new ApiError(403, 'forbidden', detail)

export const notFound = (what = 'resource'): ApiError => new ApiError(404, 'not_found', `The ${what} does not exist.`)
