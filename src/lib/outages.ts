import { ApiError } from './api-error'

// Telling an outage of D1 or KV from a bug. Both reach us as thrown errors from a binding; a
// client should retry the first (503 + Retry-After) and report the second (500). The rule is an
// allow-list of what is a bug: an SQL or type error our own statements caused. Everything else a
// binding throws (a lost connection, an overloaded or restarting database, a timeout, a storage
// reset) is the dependency being unavailable, which a retry may get past.

/** How long a client should wait before retrying after an outage, seconds. */
export const OUTAGE_RETRY_AFTER_SECONDS = 5

// D1's own constants for errors in what we sent (developers.cloudflare.com/d1/observability/debug-d1)
// and SQLite's for statements it refused; none of them goes away on a retry.
const D1_STATEMENT_ERROR =
  /D1_(TYPE_ERROR|COLUMN_NOTFOUND|EXEC_ERROR)|SQLITE_(ERROR|CONSTRAINT|MISMATCH|RANGE|TOOBIG)|constraint failed|syntax error|no such (table|column|function)|has no column|too many SQL variables/i

// KV refuses bad arguments (a key too long, a TTL under 60 s) with a 400 or "Invalid …".
const KV_ARGUMENT_ERROR = /\b400\b|invalid|too (long|large)|must be/i

/** The dependency a failure came from, when it was an outage rather than our mistake. */
export class DependencyUnavailable extends Error {
  override readonly name = 'DependencyUnavailable'

  constructor(
    readonly dependency: 'D1' | 'KV' | 'The revocation publisher',
    cause: unknown,
  ) {
    super(`${dependency} is unavailable`, { cause })
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** A D1 failure as thrown by the binding: an outage, or (unchanged) a statement error. */
export function classifyD1Failure(err: unknown): unknown {
  return D1_STATEMENT_ERROR.test(messageOf(err)) ? err : new DependencyUnavailable('D1', err)
}

/** A KV failure as thrown by the binding: an outage, or (unchanged) an argument error. */
export function classifyKvFailure(err: unknown): unknown {
  return KV_ARGUMENT_ERROR.test(messageOf(err)) ? err : new DependencyUnavailable('KV', err)
}

/** The outage somewhere in an error's cause chain (drizzle wraps what the binding threw). */
export function outageIn(err: unknown): DependencyUnavailable | undefined {
  for (let cause: unknown = err, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth += 1) {
    if (cause instanceof DependencyUnavailable) return cause
  }
  return undefined
}

/** The problem an outage answers: 503 `service_unavailable` with Retry-After, naming only the dependency. */
export function outageProblem(outage: DependencyUnavailable): ApiError {
  return new ApiError(
    503,
    'service_unavailable',
    `${outage.dependency} cannot be reached right now; try again shortly.`,
    {
      headers: { 'Retry-After': String(OUTAGE_RETRY_AFTER_SECONDS) },
      cause: outage,
    },
  )
}
