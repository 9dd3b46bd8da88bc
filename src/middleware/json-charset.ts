import { createMiddleware } from 'hono/factory'

/**
 * docs/API.md: "JSON in and out (application/json; charset=utf-8)". Hono's c.json() sends a bare
 * `application/json`; this states the charset on every JSON response in one place.
 */
export function jsonCharset() {
  return createMiddleware(async function jsonCharset(c, next) {
    await next()
    if (c.res.headers.get('content-type') !== 'application/json') return
    // A response passed through from fetch() has immutable headers: answer a copy.
    const res = new Response(c.res.body, c.res)
    res.headers.set('content-type', 'application/json; charset=utf-8')
    c.res = undefined
    c.res = res
  })
}
