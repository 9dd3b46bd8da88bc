// When a request may be sent again, and after how long.

/** Methods a server may receive twice without harm: the only ones retried on their own. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'])

export function isRetryableMethod(method: string): boolean {
  return IDEMPOTENT.has(method.toUpperCase())
}

/** An answer worth waiting for: the API is unavailable (503) or asks the client to slow down (429). */
export function isRetryableStatus(status: number): boolean {
  return status === 503 || status === 429
}

export interface RetryPolicy {
  /** Retries after the first attempt (default 3). */
  retries: number
  /** No wait is longer than this, Retry-After included (default 30 s). */
  maxDelayMs: number
  /** The first backoff step when the server names no delay (default 250 ms). */
  baseDelayMs: number
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 3, maxDelayMs: 30_000, baseDelayMs: 250 }

/** Retry-After as milliseconds (delta-seconds or an HTTP date), or undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now: number): number | undefined {
  if (header === null || header.trim() === '') return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/**
 * The wait before retry number `attempt` (1-based): the server's Retry-After when it gave one,
 * plus a little jitter so that many clients told the same do not return together; otherwise
 * "full jitter" exponential backoff. Never above maxDelayMs.
 */
export function retryDelayMs(
  attempt: number,
  policy: RetryPolicy,
  serverDelayMs: number | undefined,
  random: () => number,
): number {
  const delay =
    serverDelayMs === undefined
      ? random() * policy.baseDelayMs * 2 ** (attempt - 1)
      : serverDelayMs + random() * Math.min(1000, serverDelayMs * 0.1 + 100)
  return Math.min(policy.maxDelayMs, delay)
}
