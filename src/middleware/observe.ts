import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { RequestIdVariables } from 'hono/request-id'
import { matchedRoutes } from 'hono/route'
import { newTimings, serverTimingOf } from '../lib/timed-bindings'
import type { BindingTimings } from '../lib/timed-bindings'
import type { ConfigVariables } from './config'
import { setResponseHeader } from '../http/response-headers'

export interface ObserveVariables {
  /** What the request spends on each binding; the bindings record into it as they are called. */
  timings: BindingTimings
}

// Runs around everything else, so what later middleware publishes may be missing: a preflight or
// a 413 is answered before anything else runs, and a bad configuration before the rest.
// Only the user id is read from `auth` (set by requireUser), so that much is spelled here rather
// than importing authenticate.ts, which depends on this module.
type ObservedEnv = {
  Variables: RequestIdVariables & ObserveVariables & Partial<ConfigVariables & { auth: { userId: string } }>
}

/**
 * One structured JSON log line per request and a Server-Timing header: per binding the time
 * waited and the number of calls, where the D1 session started, and `rt`, the number of
 * sequential waves of D1 and KV round trips. The log line names the route pattern, never the
 * URL's query, and carries no token, password or email: only ids and numbers.
 */
export function observe() {
  return createMiddleware<ObservedEnv>(async function observe(c, next) {
    const started = performance.now()
    const timings = newTimings()
    c.set('timings', timings)
    await next()
    const totalMs = performance.now() - started
    const { config, auth } = c.var
    const { d1Ms, kvMs } = timings
    setResponseHeader(c, 'Server-Timing', serverTimingOf(timings, totalMs))
    // Without a parsed configuration (it is invalid) the line is written: that 500 needs it.
    if (config?.logRequests === false) return
    console.log(
      JSON.stringify({
        level: c.res.status >= 500 ? 'error' : 'info',
        message: 'request',
        request_id: c.get('requestId'),
        method: c.req.method,
        route: routeOf(c),
        status: c.res.status,
        duration_ms: Math.round(totalMs * 10) / 10,
        d1_ms: Math.round(d1Ms * 10) / 10,
        kv_ms: Math.round(kvMs * 10) / 10,
        d1_calls: timings.d1Calls,
        kv_calls: timings.kvCalls,
        rt: timings.depth,
        user_id: auth?.userId ?? null,
      }),
    )
  })
}

function routeOf(c: Context): string {
  // The first matching handler is the one that ran (/users/me is registered before /users/:id).
  const route = matchedRoutes(c).find((r) => r.method !== 'ALL')
  return route?.path ?? 'unmatched'
}
