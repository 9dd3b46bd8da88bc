import { createMiddleware } from 'hono/factory'
import type { Env } from '../config'
import { createDb } from '../db/client'
import type { Db } from '../db/client'
import { carriesCredentials } from '../http/cookie-session'
import { BOOKMARK_HEADER, isSafeMethod } from '../http/request'
import { timedD1, timedKv } from '../lib/timed-bindings'
import type { BindingTimings } from '../lib/timed-bindings'
import type { EdgeCacheVariables } from './edge-cache'
import { policyOf } from './route-policy'

export interface BindingVariables {
  /** drizzle over this request's D1 session, timed for Server-Timing. */
  db: Db
  /** REVOKED_TOKENS, timed for Server-Timing. */
  kv: KVNamespace
  timings: BindingTimings
}


/**
 * Opens the request's D1 session (read replication) where its route and method need it, and
 * wraps D1 and KV so the time spent waiting on them is measured. Answers with the session's
 * bookmark in X-D1-Bookmark.
 */
export function withBindings() {
  return createMiddleware<{ Bindings: Env; Variables: BindingVariables & EdgeCacheVariables }>(async function withBindings(c, next) {
    const timings = { d1Ms: 0, kvMs: 0 }
    const session = c.env.DB.withSession(
      sessionStart({
        method: c.req.method,
        routeNeedsPrimary: policyOf(c).d1Primary === true,
        authenticated: carriesCredentials(c),
        // A response about to fill the edge cache must include the write that purged it.
        bookmark: c.var.cacheFillBookmark ?? c.req.header(BOOKMARK_HEADER),
      }),
    )
    c.set('timings', timings)
    // drizzle needs only prepare() and batch(), which a D1 session has.
    c.set('db', createDb({ DB: timedD1(session as unknown as D1Database, timings) }))
    c.set('kv', timedKv(c.env.REVOKED_TOKENS, timings))
    await next()
    const bookmark = session.getBookmark()
    if (bookmark !== null) c.header(BOOKMARK_HEADER, bookmark)
  })
}

interface SessionRequest {
  method: string
  /** The route declares `d1Primary` (routePolicy): its reads must not be stale. */
  routeNeedsPrimary: boolean
  /** The request carries credentials (Authorization header or session cookie). */
  authenticated: boolean
  bookmark: string | undefined
}

/**
 * Where a request's D1 session starts (D1 Sessions API, read replication). Writes, routes that
 * declare `d1Primary` (every /auth route), and every authenticated request (its user row, admin
 * flag and sessions must not be stale) start at the primary. Anonymous reads start after the
 * client's bookmark when it sends one, so they see at least everything that client wrote, or at
 * the nearest replica.
 */
export function sessionStart({ method, routeNeedsPrimary, authenticated, bookmark }: SessionRequest): D1SessionConstraint | D1SessionBookmark {
  if (!isSafeMethod(method) || routeNeedsPrimary || authenticated) return 'first-primary'
  if (bookmark !== undefined && /^[0-9a-f]{1,64}(-[0-9a-f]{1,64}){1,7}$/i.test(bookmark)) return bookmark
  return 'first-unconstrained'
}
