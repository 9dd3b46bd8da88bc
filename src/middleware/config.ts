import { createMiddleware } from 'hono/factory'
import { getConfig } from '../config'
import type { Config, Env } from '../config'

export interface ConfigVariables {
  config: Config
}

/**
 * Publishes the parsed configuration as `c.get('config')`: the one way middleware and handlers read
 * it (the cron calls getConfig itself; both share its per-isolate memo). A bad configuration
 * throws a 500 problem that names the variable to fix.
 */
export function withConfig() {
  return createMiddleware<{ Bindings: Env; Variables: ConfigVariables }>(async function withConfig(c, next) {
    c.set('config', getConfig(c.env))
    await next()
  })
}
