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
    c.set('db', createDb({ DB: timedD1(c.env.DB, timings) }))
    c.set('kv', timedKv(c.env.REVOKED_TOKENS, timings))
    await next()
  })
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
