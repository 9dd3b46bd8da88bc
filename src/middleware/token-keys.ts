import { createMiddleware } from 'hono/factory'
import type { Config } from '../config'
import { loadTokenKeys } from '../lib/token-keys'
import type { TokenKeys } from '../lib/token-keys'
import type { ConfigVariables } from './config'

export interface TokenKeysVariables {
  tokenKeys: TokenKeys
}

const tokenKeysByConfig = new WeakMap<Config, Promise<TokenKeys>>()

/** Publishes the signing and verification keys as `c.get('tokenKeys')`, imported once per isolate. */
export function withTokenKeys() {
  return createMiddleware<{ Variables: ConfigVariables & TokenKeysVariables }>(async function withTokenKeys(c, next) {
    c.set('tokenKeys', await tokenKeysFor(c.get('config')))
    await next()
  })
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
