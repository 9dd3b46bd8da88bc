import type { Context } from 'hono'

/**
 * Sets a header of the response a middleware got back from next(). Once the handler has answered,
 * Hono's c.header() copies the whole Response for every header it sets; this changes the headers
 * in place, and copies (through c.header) only a response whose headers are immutable, one passed
 * through from fetch() or the cache.
 */
export function setResponseHeader(c: Context, name: string, value: string, options: { append?: boolean } = {}): void {
  try {
    if (options.append === true) c.res.headers.append(name, value)
    else c.res.headers.set(name, value)
  } catch {
    c.header(name, value, options)
  }
}
