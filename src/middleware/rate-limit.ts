import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { Env } from '../config'
import { ApiError } from '../lib/api-error'
import { timedLocal } from '../lib/timed-bindings'
import type { BindingTimings } from '../lib/timed-bindings'
import type { ObserveVariables } from './observe'

type LimitedEnv = { Bindings: Env; Variables: ObserveVariables }

export type Limiter = 'CREDENTIALS_BY_IP' | 'CREDENTIALS_BY_ACCOUNT' | 'WRITES_BY_USER'

// The binding answers only {success}, so Retry-After is the window length; keep these in step
// with the `simple = { period }` of each [[ratelimits]] entry in wrangler.toml.
const PERIOD_SECONDS: Record<Limiter, number> = {
  CREDENTIALS_BY_IP: 60,
  CREDENTIALS_BY_ACCOUNT: 60,
  WRITES_BY_USER: 60,
}

/**
 * Counts one request against `limiter` for `key`; over the limit → 429 `rate_limited` with
 * Retry-After. A limiter that is not bound, or that fails, lets the request through: rate limiting
 * protects capacity and slows guessing, and must not take the API down with it.
 */
export async function enforceRateLimit(
  env: Env,
  limiter: Limiter,
  key: string,
  timings?: BindingTimings,
): Promise<void> {
  const binding = env[limiter]
  if (binding === undefined) return
  let allowed = true
  try {
    allowed = (await timedLocal(timings, 'rateLimit', () => binding.limit({ key }))).success
  } catch (err) {
    console.error(
      JSON.stringify({
        level: 'error',
        message: 'rate limiter failed',
        limiter,
        error: err instanceof Error ? err.name : 'unknown',
      }),
    )
  }
  if (!allowed) {
    const retryAfter = PERIOD_SECONDS[limiter]
    throw new ApiError(429, 'rate_limited', `Too many requests; try again in ${retryAfter} seconds.`, {
      headers: { 'Retry-After': String(retryAfter) },
    })
  }
}

/**
 * Limits a credential endpoint per client IP (CF-Connecting-IP, which Cloudflare's edge always
 * sets). Requests with no client IP (in-process calls such as tests) are limited per account only.
 */
export function limitByClientIp(endpoint: string) {
  return createMiddleware<LimitedEnv>(async function limitByClientIp(c, next) {
    const ip = c.req.header('cf-connecting-ip')
    if (ip !== undefined) await enforceRateLimit(c.env, 'CREDENTIALS_BY_IP', `${endpoint}:${ip}`, c.get('timings'))
    await next()
  })
}

// Each kind of account key has its own prefix, so no string a client types can name another
// kind's bucket: the login name `user:5` is not user 5.

/** Limits a credential endpoint per login name: the username or email being tried, in any case. */
export function limitByAccount<E extends LimitedEnv>(c: Context<E>, endpoint: string, login: string): Promise<void> {
  return enforceRateLimit(
    c.env,
    'CREDENTIALS_BY_ACCOUNT',
    `${endpoint}:login:${login.trim().normalize('NFC').toLowerCase()}`,
    c.get('timings'),
  )
}

/**
 * Limits a credential endpoint per existing user, whatever spelling named them (username, email,
 * any case): one budget per account.
 */
export function limitByUser<E extends LimitedEnv>(c: Context<E>, endpoint: string, userId: number): Promise<void> {
  return enforceRateLimit(c.env, 'CREDENTIALS_BY_ACCOUNT', `${endpoint}:user:${userId}`, c.get('timings'))
}
