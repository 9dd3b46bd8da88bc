import type { createApp } from './app'
import type { Env } from './config'
import type { MailQueueMessage } from './lib/mail-queue-messages'

// The Durable Object class must be exported by the entry module; it imports its work lazily.
export { NewsletterSender } from './newsletters/sender'
export { RevocationPublisher } from './sessions/revocation-publisher'

// The Worker's entry. The app (every route, its zod schemas, the OpenAPI registry) is built on
// the first request of an isolate, not while the isolate starts: a worker deployed to every
// location starts cold in each of them, and start-up is paid before any request can be served
// (scripts/checks/budget.ts holds it to a budget). The imports below are separate modules that esbuild
// evaluates only when they are first imported; the cron's is loaded when it first runs.

type App = ReturnType<typeof createApp>

let app: Promise<App> | undefined

function loadApp(): Promise<App> {
  app ??= import('./app').then((module) => module.createApp())
  return app
}

export type AppType = App

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    return (await loadApp()).fetch(request, env, ctx)
  },
  scheduled(controller, env, ctx) {
    const run = import('./scheduled').then((module) =>
      module.runScheduledMaintenance(env, new Date(controller.scheduledTime)),
    )
    ctx.waitUntil(run)
  },
  // The mail queue and its dead-letter queue: outbox drains and newsletter batches.
  async queue(batch, env) {
    const { handleMailQueue } = await import('./newsletters/consumer')
    await handleMailQueue(batch, env)
  },
} satisfies ExportedHandler<Env, MailQueueMessage>
