import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { RequestIdVariables } from 'hono/request-id'
import { matchedRoutes } from 'hono/route'
import type { AuthVariables } from './authenticate'
import type { BindingVariables } from './bindings'
import type { ConfigVariables } from './config'

// Runs around everything else, so what later middleware publishes may be missing: a preflight or
// a 413 is answered before the bindings are opened, and a bad configuration before anything.
type ObservedEnv = { Variables: RequestIdVariables & Partial<ConfigVariables & BindingVariables & AuthVariables> }

/**
 * One structured JSON log line per request and a Server-Timing header with the time spent on D1
 * and KV. The line names the route pattern, never the URL's query, and carries no token,
 * password or email: only ids and numbers.
 */
export function observe() {
  return createMiddleware<ObservedEnv>(async function observe(c, next) {
    const started = performance.now()
    await next()
    const totalMs = performance.now() - started
    const { timings, config, auth } = c.var
    const d1Ms = timings?.d1Ms ?? 0
    const kvMs = timings?.kvMs ?? 0
    c.header('Server-Timing', `d1;dur=${d1Ms.toFixed(1)}, kv;dur=${kvMs.toFixed(1)}, total;dur=${totalMs.toFixed(1)}`)
    // Without a parsed configuration (it is invalid) the line is written: that 500 needs it.
    if (config?.logRequests === false) return
    console.log(
      JSON.stringify({
        level: c.res.status >= 500 ? 'error' : 'info',
        message: 'request',
        request_id: c.var.requestId,
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

function routeOf(c: Context): string {
  // The first matching handler is the one that ran (/users/me is registered before /users/:id).
  const route = matchedRoutes(c).find((r) => r.method !== 'ALL')
  return route?.path ?? 'unmatched'
}
