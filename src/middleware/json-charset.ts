import { createMiddleware } from 'hono/factory'
import { setResponseHeader } from '../http/response-headers'

/**
 * docs/API.md: "JSON in and out (application/json; charset=utf-8)". Hono's c.json() sends a bare
 * `application/json`; this states the charset on every JSON response in one place.
 */
export function jsonCharset() {
  return createMiddleware(async function jsonCharset(c, next) {
    await next()
    if (c.res.headers.get('content-type') !== 'application/json') return
    setResponseHeader(c, 'content-type', 'application/json; charset=utf-8')
  })
}
