import { createRouter } from '../../router'
import { accountRouter } from './account.handlers'
import { devicesRouter } from './devices.handlers'
import { mfaRouter } from './mfa.handlers'
import { oidcRouter } from './oidc.handlers'
import { passkeysRouter } from './passkeys.handlers'
import { tokensRouter } from './tokens.handlers'

// The /auth resource: each sub-resource keeps its routes, handlers and router together and is
// mounted here. Hono matches routes in the order they are registered, so a static path must be
// mounted before a parameterised one it would otherwise match (none overlap today).
export const authRouter = createRouter()
  .route('/', accountRouter)
  .route('/', tokensRouter)
  .route('/', devicesRouter)
  .route('/', mfaRouter)
  .route('/', oidcRouter)
  .route('/', passkeysRouter)
