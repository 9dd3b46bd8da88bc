import { OpenAPIHono } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'
import { methodNotAllowed } from 'hono/method-not-allowed'
import { requestId } from 'hono/request-id'
import { onError, onMethodNotAllowed, onNotFound } from './errors'
import { withBindings } from './middleware/bindings'
import { negotiateBody } from './middleware/body'
import { apiSecurityHeaders, corsForConfiguredOrigins } from './middleware/browser-security'
import { withConfig } from './middleware/config'
import { edgeCache } from './middleware/edge-cache'
import { jsonCharset } from './middleware/json-charset'
import { observe } from './middleware/observe'
import { withTokenKeys } from './middleware/token-keys'
import { API_PREFIX } from './router'
import type { AppEnv } from './router'
import { authRouter } from './routes/auth/auth.index'
import { appAssociationRouter } from './routes/app-association'
import { metaRouter } from './routes/meta'
import { serveOpenApiDocument } from './routes/openapi'
import { feedRouter } from './routes/feed/feed.handlers'
import { emailEventsRouter } from './routes/email-events/email-events.handlers'
import { newslettersRouter } from './routes/newsletters/newsletters.handlers'
import { postsRouter } from './routes/posts/posts.handlers'
import { subscribersRouter } from './routes/subscribers/subscribers.handlers'
import { usersRouter } from './routes/users/users.handlers'

const MAX_BODY_BYTES = 64 * 1024

/**
 * Builds the whole app: the middleware order, the mounts and the error mapping live here. What a
 * single route needs (edge caching, form bodies, D1 primary) it declares itself with
 * routePolicy(); the middleware below read it.
 */
export function createApp() {
  const app = new OpenAPIHono<AppEnv>()

  app.use(requestId())
  app.use(observe())
  app.use(apiSecurityHeaders())
  app.use(withConfig())
  app.use(corsForConfiguredOrigins())
  app.use(jsonCharset())
  app.use(methodNotAllowed({ app, onMethodNotAllowed }))
  app.use(bodyLimit({ maxSize: MAX_BODY_BYTES }))
  app.use(withTokenKeys())
  app.use(edgeCache())
  app.use(withBindings())
  app.use(negotiateBody())

  const routes = app
    .route('/', metaRouter)
    .route('/', appAssociationRouter)
    .route(`${API_PREFIX}/auth`, authRouter)
    .route(`${API_PREFIX}/users`, usersRouter)
    .route(API_PREFIX, postsRouter)
    .route(API_PREFIX, feedRouter)
    .route(API_PREFIX, newslettersRouter)
    .route(`${API_PREFIX}/subscribers`, subscribersRouter)
    .route(`${API_PREFIX}/email`, emailEventsRouter)

  serveOpenApiDocument(app)

  app.notFound(onNotFound)
  app.onError(onError)
  return routes
}
