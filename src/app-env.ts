import type { RequestIdVariables } from 'hono/request-id'
import type { Env } from './config'
import type { AdminVariables, AuthVariables, OptionalAuthVariables } from './middleware/authenticate'
import type { BindingVariables } from './middleware/bindings'
import type { ConfigVariables } from './middleware/config'
import type { EdgeCacheVariables } from './middleware/edge-cache'
import type { ObserveVariables } from './middleware/observe'
import type { TokenKeysVariables } from './middleware/token-keys'

// The Hono environments of the app: bindings and the variables middleware publish. Their own
// module, so that errors.ts (which router.ts imports) can name them too.

/** What every handler can read: the variables the app-level middleware publish (src/app.ts). */
export type AppVariables = RequestIdVariables &
  ObserveVariables &
  ConfigVariables &
  TokenKeysVariables &
  BindingVariables &
  EdgeCacheVariables

export interface AppEnv {
  Bindings: Env
  Variables: AppVariables
}

/** Handlers of routes with requireUser(). */
export interface AuthedEnv extends AppEnv {
  Variables: AppVariables & AuthVariables
}

/** Handlers of routes with optionalUser(): `auth` is undefined for an anonymous request. */
export interface OptionalAuthEnv extends AppEnv {
  Variables: AppVariables & OptionalAuthVariables
}

/** Handlers of routes with requireAdmin(). */
export interface AdminEnv extends AppEnv {
  Variables: AppVariables & AdminVariables
}
