import { createMiddleware } from 'hono/factory'
import { secureHeaders } from 'hono/secure-headers'
import { CSRF_HEADER } from '../http/cookie-mode'
import { BOOKMARK_HEADER } from '../http/request'
import type { ConfigVariables } from './config'
import { policyOf } from './route-policy'
import { setResponseHeader } from '../http/response-headers'

// Browser-facing protections. The API serves only JSON, so its responses may load nothing and be
// framed by nobody; the /docs page gets its own, looser CSP from public/_headers.

/**
 * HSTS, nosniff, no framing, no referrer, and a CSP under which a JSON response can do nothing.
 * A route that declares `htmlPage` (/docs) keeps the CSP it gets from public/_headers (scripts
 * and styles from this origin only).
 */
export function apiSecurityHeaders() {
  const common = {
    xFrameOptions: 'DENY',
    strictTransportSecurity: 'max-age=31536000; includeSubDomains',
    referrerPolicy: 'no-referrer',
    crossOriginResourcePolicy: false,
    crossOriginOpenerPolicy: false,
    xXssProtection: false,
  } as const
  const forApi = secureHeaders({
    ...common,
    contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"], baseUri: ["'none'"] },
  })
  const forPage = secureHeaders(common)
  return createMiddleware(function apiSecurityHeaders(c, next) {
    return policyOf(c).htmlPage === true ? forPage(c, next) : forApi(c, next)
  })
}

const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE'
const ALLOWED_HEADERS = `Authorization, Content-Type, If-None-Match, X-Request-Id, ${CSRF_HEADER}, ${BOOKMARK_HEADER}`
const EXPOSED_HEADERS = `ETag, Location, Retry-After, Server-Timing, WWW-Authenticate, X-Request-Id, ${BOOKMARK_HEADER}`

/**
 * CORS for the origins in CORS_ORIGINS only: preflights answered, credentials (cookies) allowed,
 * the headers clients need exposed. Any other origin gets no CORS header at all (Hono's cors()
 * would still send Allow-Credentials and Expose-Headers), so the browser withholds the response.
 */
export function corsForConfiguredOrigins() {
  return createMiddleware<{ Variables: ConfigVariables }>(async function corsForConfiguredOrigins(c, next) {
    const origin = c.req.header('origin')
    const allowed = origin !== undefined && c.get('config').corsOrigins.includes(origin)
    const isPreflight = c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined
    if (isPreflight) {
      // Through the context, so X-Request-Id and the security headers are kept.
      c.header('Vary', 'Origin')
      if (allowed) {
        c.header('Access-Control-Allow-Origin', origin)
        c.header('Access-Control-Allow-Credentials', 'true')
        c.header('Access-Control-Allow-Methods', ALLOWED_METHODS)
        c.header('Access-Control-Allow-Headers', ALLOWED_HEADERS)
        c.header('Access-Control-Max-Age', '600')
      }
      return c.body(null, 204)
    }
    await next()
    setResponseHeader(c, 'Vary', 'Origin', { append: true })
    if (allowed) {
      setResponseHeader(c, 'Access-Control-Allow-Origin', origin)
      setResponseHeader(c, 'Access-Control-Allow-Credentials', 'true')
      setResponseHeader(c, 'Access-Control-Expose-Headers', EXPOSED_HEADERS)
    }
  })
}
