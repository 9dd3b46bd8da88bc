import { drizzle } from 'drizzle-orm/d1'
import { createMiddleware } from 'hono/factory'
import { getConfig } from '../config'
import type { Config, Env } from '../config'
import * as schema from '../db/schema'
import { loadTokenKeys } from '../lib/token-keys'
import type { TokenKeys } from '../lib/token-keys'
import type { AppEnv } from '../router'

const tokenKeysByConfig = new WeakMap<Config, Promise<TokenKeys>>()

/** Config, keys and the D1 client for the request. Config and keys are built once per isolate. */
export function withContext() {
  return createMiddleware<AppEnv>(async function withContext(c, next) {
    const config = getConfig(c.env)
    c.set('config', config)
    c.set('tokenKeys', await tokenKeysFor(config))
    c.set('db', createDb(c.env))
    await next()
  })
}

export function createDb(env: Pick<Env, 'DB'>) {
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
