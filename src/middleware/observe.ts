import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import { matchedRoutes } from 'hono/route'
import type { AppEnv } from '../router'

/**
 * One structured JSON log line per request and a Server-Timing header with the time spent on D1
 * and KV. The line names the route pattern, never the URL's query, and carries no token,
 * password or email: only ids and numbers.
 */
export function observe() {
  return createMiddleware<AppEnv>(async function observe(c, next) {
    const started = performance.now()
    await next()
    const totalMs = performance.now() - started
    const timings = c.get('timings') as AppEnv['Variables']['timings'] | undefined
    const d1Ms = timings?.d1Ms ?? 0
    const kvMs = timings?.kvMs ?? 0
    c.header('Server-Timing', `d1;dur=${d1Ms.toFixed(1)}, kv;dur=${kvMs.toFixed(1)}, total;dur=${totalMs.toFixed(1)}`)
    const config = c.get('config') as AppEnv['Variables']['config'] | undefined
    // Responses made before withContext() (preflights, 413, a bad config) have no parsed config.
    const logRequests = config?.logRequests ?? (c.env as { LOG_REQUESTS?: string }).LOG_REQUESTS !== 'false'
    if (!logRequests) return
    const auth = c.get('auth' as never) as { userId: string } | undefined
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
        user_id: auth?.userId ?? null,
      }),
    )
  })
}

function routeOf(c: Context<AppEnv>): string {
  // The first matching handler is the one that ran (/users/me is registered before /users/:id).
  const route = matchedRoutes(c).find((r) => r.method !== 'ALL')
  return route?.path ?? 'unmatched'
}
