import { OpenAPIHono } from '@hono/zod-openapi'
import { bodyLimit } from 'hono/body-limit'
import { methodNotAllowed } from 'hono/method-not-allowed'
import { requestId } from 'hono/request-id'
import { ApiError, notFound, onError, problemResponse } from './errors'
import { negotiateBody } from './middleware/body'
import { edgeCache } from './middleware/edge-cache'
import { apiSecurityHeaders, corsForConfiguredOrigins } from './middleware/browser-security'
import { jsonCharset } from './middleware/json-charset'
import { observe } from './middleware/observe'
import { withContext } from './middleware/context'
import type { AppEnv } from './router'
import { runScheduledMaintenance } from './scheduled'
import { ACCOUNT_FORM_BODY_PATHS } from './routes/auth/account.routes'
import { FORM_BODY_PATHS } from './routes/auth/auth.routes'
import { authRouter } from './routes/auth/auth.handlers'
import { metaRouter } from './routes/meta'
import { serveOpenApiDocument } from './routes/openapi'
import { postsRouter } from './routes/posts/posts.handlers'
import { subscribersRouter } from './routes/subscribers/subscribers.handlers'
import { usersRouter } from './routes/users/users.handlers'

const API_PREFIX = '/api/v1'
const MAX_BODY_BYTES = 64 * 1024

/** Builds the whole app: the middleware order, the mounts and the error mapping live here. */
export function createApp() {
  const app = new OpenAPIHono<AppEnv>()

  app.use(requestId())
  app.use(observe())
  app.use(corsForConfiguredOrigins())
  app.use(apiSecurityHeaders())
  app.use(jsonCharset())
  app.use(
    methodNotAllowed({
      app,
      onMethodNotAllowed: (c, methods) =>
        problemResponse(
          c,
          new ApiError(405, 'method_not_allowed', `Use one of: ${methods.join(', ')}.`, {
            headers: { Allow: methods.join(', ') },
          }),
        ),
    }),
  )
  app.use(bodyLimit({ maxSize: MAX_BODY_BYTES }))
  app.use(withContext())
  app.use(edgeCache())
  const formPaths = [...FORM_BODY_PATHS, ...ACCOUNT_FORM_BODY_PATHS].map((path) => `${API_PREFIX}/auth${path}`)
  app.use(negotiateBody(new Set(formPaths)))

  const routes = app
    .route('/', metaRouter)
    .route(`${API_PREFIX}/auth`, authRouter)
    .route(`${API_PREFIX}/users`, usersRouter)
    .route(`${API_PREFIX}/posts`, postsRouter)
    .route(`${API_PREFIX}/subscribers`, subscribersRouter)

  serveOpenApiDocument(app, formPaths)

  app.notFound((c) => problemResponse(c, notFound('route')))
  app.onError(onError)
  return routes
}

const app = createApp()

export type AppType = typeof app

export default {
  fetch: app.fetch,
  scheduled(controller, env, ctx) {
    ctx.waitUntil(runScheduledMaintenance(env, new Date(controller.scheduledTime)))
  },
} satisfies ExportedHandler<AppEnv['Bindings']>
