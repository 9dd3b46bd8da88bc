import type { Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { Env } from '../config'
import { createDb } from '../db/client'
import type { Db } from '../db/client'
import { BOOKMARK_HEADER, isSafeMethod } from '../http/request'
import { timedD1, timedKv } from '../lib/timed-bindings'
import type { D1Start, WriteGate } from '../lib/timed-bindings'
import type { EdgeCacheVariables } from './edge-cache'
import type { ObserveVariables } from './observe'
import { policyOf } from './route-policy'
import { revocationStoreOf } from '../sessions/revocation-keys'
import type { RevocationStore } from '../sessions/revocation-keys'
import { setResponseHeader } from '../http/response-headers'

export interface BindingVariables {
  /** drizzle over this request's D1 session, timed for Server-Timing. */
  db: Db
  /** REVOKED_TOKENS, timed for Server-Timing. */
  kv: KVNamespace
  /** Where revocations are written and checked: the timed KV, the publisher, this location's markers. */
  revocations: RevocationStore
  /** Holds D1 and KV writes back until it settles (requireUser sets it to the revocation check). */
  writeGate: WriteGate
  /** drizzle over D1 without a session, which reads at the primary (timed as `db`). */
  primaryDb: () => Db
}

/**
 * Opens the request's D1 session (read replication) where its route and method need it, and
 * wraps D1 and KV so the time spent waiting on them is measured. Answers with the session's
 * bookmark in X-D1-Bookmark.
 */
export function withBindings() {
  return createMiddleware<{ Bindings: Env; Variables: BindingVariables & EdgeCacheVariables & ObserveVariables }>(
    async function withBindings(c, next) {
      const timings = c.get('timings')
      const sent = c.req.header(BOOKMARK_HEADER)
      const constraint = d1SessionStart({
        method: c.req.method,
        routeNeedsPrimary: policyOf(c).d1Primary === true,
        routeReadsFirstAtReplica: policyOf(c).d1ReplicaFirst === true,
        // A response about to fill the edge cache must include the write that purged it.
        bookmark: c.get('cacheFillBookmark') ?? sent,
      })
      timings.d1Start = startOf(constraint)
      const session = c.env.DB.withSession(constraint)
      const writeGate: WriteGate = { ready: Promise.resolve() }
      c.set('writeGate', writeGate)
      // drizzle needs only prepare() and batch(), which a D1 session has.
      c.set('db', createDb({ DB: timedD1(session as unknown as D1Database, timings, undefined, writeGate) }))
      const kv = timedKv(c.env.REVOKED_TOKENS, timings, undefined, writeGate)
      c.set('kv', kv)
      c.set(
        'revocations',
        revocationStoreOf(c.env, {
          kv,
          timings,
          gate: writeGate,
          afterResponse: (work) => runAfterResponse(c, work),
        }),
      )
      let primary: Db | undefined
      // D1 without a session reads at the primary; made on first use (only login's failures need it).
      c.set('primaryDb', () => {
        primary ??= createDb({ DB: timedD1(c.env.DB, timings, undefined, writeGate) })
        return primary
      })
      await next()
      // Every response hands a bookmark back: the session's, or the one the client sent when the
      // request read nothing, so a client keeps the newest it has seen.
      const bookmark = session.getBookmark() ?? (sent !== undefined && isBookmark(sent) ? sent : null)
      if (bookmark !== null) setResponseHeader(c, BOOKMARK_HEADER, bookmark)
    },
  )
}

/** Lets `work` finish after the response (app.request() in scripts has no context: it just runs). */
function runAfterResponse(c: Context, work: Promise<unknown>): void {
  try {
    c.executionCtx.waitUntil(work)
  } catch {
    // No execution context: the promise runs on its own.
  }
}

function startOf(constraint: string): D1Start {
  if (constraint === 'first-primary') return 'primary'
  return constraint === 'first-unconstrained' ? 'any' : 'bookmark'
}

function isBookmark(value: string): boolean {
  return /^[0-9a-f]{1,64}(-[0-9a-f]{1,64}){1,7}$/i.test(value)
}

interface SessionRequest {
  method: string
  /** The route declares `d1Primary` (routePolicy): its reads must not be stale. */
  routeNeedsPrimary: boolean
  /** The route declares `d1ReplicaFirst`: its write re-checks at the primary what it read. */
  routeReadsFirstAtReplica?: boolean
  bookmark: string | undefined
}

/**
 * Where a request's D1 session starts (D1 Sessions API, read replication). Writes, and reads of
 * routes that declare `d1Primary` (every /auth route, the admin routes) start at the primary,
 * except login (`d1ReplicaFirst`), which reads the account where other reads do.
 * Every other read, signed in or not, starts after the client's bookmark when it sends one, so it
 * sees at least everything that client wrote, or else at the nearest replica.
 */
export function d1SessionStart({
  method,
  routeNeedsPrimary,
  routeReadsFirstAtReplica = false,
  bookmark,
}: SessionRequest): D1SessionConstraint | D1SessionBookmark {
  if ((!isSafeMethod(method) || routeNeedsPrimary) && !routeReadsFirstAtReplica) return 'first-primary'
  if (bookmark !== undefined && isBookmark(bookmark)) return bookmark
  return 'first-unconstrained'
}
