import type { Context, MiddlewareHandler } from 'hono'
import { matchedRoutes } from 'hono/route'

// Route policy is declared where a route is defined, as the first entry of its `middleware`:
//
//   middleware: [routePolicy({ edgeCached: true })] as const
//
// The marker itself does nothing when it runs. The app-level machinery (edge cache, body
// negotiation, D1 session start, security headers) and the OpenAPI document read it before the
// route runs, from the handlers Hono matched for the request. Resource routers must not set their
// own onError: Hono would wrap each handler when mounting them, hiding the marker.

/** What the shared machinery does for one route. Everything is off unless declared. */
export interface RoutePolicy {
  /** Anonymous GETs are served from the location's edge cache (src/middleware/edge-cache.ts). */
  edgeCached?: boolean
  /** A successful write makes everything edge-cached stale at this location. */
  purgesEdgeCache?: boolean
  /** The body may also be application/x-www-form-urlencoded (src/middleware/body.ts). */
  formBody?: boolean
  /** The body may also be multipart/form-data, its text fields only (RFC 8058 one-click unsubscribe). */
  multipartBody?: boolean
  /** The D1 session starts at the primary even for a read (src/middleware/bindings.ts). */
  d1Primary?: boolean
  /**
   * Overrides d1Primary for a write whose first read may come from the nearest replica (or the
   * client's bookmark) because its write re-checks what it read, at the primary: login, which so
   * makes one trip to the primary instead of two (src/routes/auth/tokens.handlers.ts).
   */
  d1ReplicaFirst?: boolean
  /** The response is the HTML docs page: it gets the page's CSP, not the API's. */
  htmlPage?: boolean
}

const POLICY = Symbol('edgepress route policy')

type PolicyMarker = MiddlewareHandler<NoVariables> & { [POLICY]: RoutePolicy }

const NO_POLICY: RoutePolicy = Object.freeze({})

// The marker needs nothing from the context: an empty Env keeps the route's other middleware
// (requireUser's `auth`) visible to its handler's type.
type NoVariables = Record<never, never>

/** The marker that declares a route's policy. */
export function routePolicy(policy: RoutePolicy): MiddlewareHandler<NoVariables> {
  const marker: MiddlewareHandler<NoVariables> = async function routePolicy(_c, next) {
    await next()
  }
  return Object.assign(marker, { [POLICY]: Object.freeze({ ...policy }) })
}

/** The policy a handler declares, if it is a marker. */
export function declaredPolicy(handler: unknown): RoutePolicy | undefined {
  return typeof handler === 'function' && POLICY in handler ? (handler as PolicyMarker)[POLICY] : undefined
}

const policies = new WeakMap<Request, RoutePolicy>()

/**
 * The policy of the route that answers this request: the first route Hono matched (routes are
 * matched in registration order, so /users/me wins over /users/{id}). No route, no policy.
 */
export function policyOf(c: Context): RoutePolicy {
  const cached = policies.get(c.req.raw)
  if (cached !== undefined) return cached
  const matched = matchedRoutes(c)
  const route = matched.find((candidate) => candidate.method !== 'ALL')
  let policy = NO_POLICY
  if (route !== undefined) {
    for (const candidate of matched) {
      if (candidate.method !== route.method || candidate.path !== route.path) continue
      policy = declaredPolicy(candidate.handler) ?? policy
    }
  }
  policies.set(c.req.raw, policy)
  return policy
}
