import { drizzle } from 'drizzle-orm/d1'
import { createMiddleware } from 'hono/factory'
import { getConfig } from '../config'
import type { Config, Env } from '../config'
import * as schema from '../db/schema'
import { timedD1, timedKv } from '../lib/timed-bindings'
import { loadTokenKeys } from '../lib/token-keys'
import type { TokenKeys } from '../lib/token-keys'
import type { AppEnv, Db } from '../router'

const tokenKeysByConfig = new WeakMap<Config, Promise<TokenKeys>>()

/**
 * Config, keys, and the D1 and KV clients for the request (timed for Server-Timing). Config and
 * keys are built once per isolate.
 */
export function withContext() {
  return createMiddleware<AppEnv>(async function withContext(c, next) {
    const config = getConfig(c.env)
    const timings = { d1Ms: 0, kvMs: 0 }
    c.set('config', config)
    c.set('tokenKeys', await tokenKeysFor(config))
    c.set('timings', timings)
    const authenticated = c.req.header('authorization') !== undefined || (c.req.header('cookie') ?? '').includes('__Host-edgepress-')
    const session = c.env.DB.withSession(
      sessionStart({ method: c.req.method, path: c.req.path, authenticated, bookmark: c.req.header(BOOKMARK_HEADER) }),
    )
    // drizzle needs only prepare() and batch(), which a D1 session has.
    c.set('db', createDb({ DB: timedD1(session as unknown as D1Database, timings) }))
    c.set('kv', timedKv(c.env.REVOKED_TOKENS, timings))
    await next()
    const bookmark = session.getBookmark()
    if (bookmark !== null) c.header(BOOKMARK_HEADER, bookmark)
  })
}

/** The D1 session bookmark a client sends back to read its own writes from any replica. */
export const BOOKMARK_HEADER = 'X-D1-Bookmark'

const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

interface SessionRequest {
  method: string
  path: string
  /** The request carries credentials (Authorization header or session cookie). */
  authenticated: boolean
  bookmark: string | undefined
}

/**
 * Where a request's D1 session starts (D1 Sessions API, read replication). Writes, everything
 * under /auth, and every authenticated request (its user row, admin flag and sessions must not be
 * stale) start at the primary. Anonymous reads start after the client's bookmark when it sends
 * one — so they see at least everything that client wrote — or at the nearest replica.
 */
export function sessionStart({ method, path, authenticated, bookmark }: SessionRequest): D1SessionConstraint | D1SessionBookmark {
  if (UNSAFE_METHODS.has(method) || authenticated || path.startsWith('/api/v1/auth/')) return 'first-primary'
  if (bookmark !== undefined && /^[0-9a-f]{1,64}(-[0-9a-f]{1,64}){1,7}$/i.test(bookmark)) return bookmark
  return 'first-unconstrained'
}

export function createDb(env: Pick<Env, 'DB'>): Db {
  return drizzle(env.DB, { schema, casing: 'snake_case' })
}

function tokenKeysFor(config: Config): Promise<TokenKeys> {
  let keys = tokenKeysByConfig.get(config)
  if (keys === undefined) {
    keys = loadTokenKeys(config.tokens)
    // A failed import (bad JWK) must not be cached forever in a long-lived isolate.
    keys.catch(() => tokenKeysByConfig.delete(config))
    tokenKeysByConfig.set(config, keys)
  }
  return keys
}
