// The OpenAPI document exactly as the Worker serves it at /openapi.json, made in Node by calling
// the app (no server, no bindings: only configuration is read to serve it). Shared by `npm run
// openapi` (lint it, generate types) and `npm run client:types` (the SDK's types).
// The app, not the Worker entry: src/index.ts also exports Durable Object classes (cloudflare:workers).
import { createApp } from '../src/app'

export async function servedOpenApiDocument(): Promise<Record<string, unknown>> {
  const env = {
    JWT_SECRET: 'openapi-export-only-not-a-real-secret!!',
    LOG_REQUESTS: 'false',
    DB: { withSession: () => ({ getBookmark: () => null }) },
    REVOKED_TOKENS: {},
  } as never
  const response = await createApp().fetch(new Request('https://edgepress.example/openapi.json'), env, {} as never)
  if (response.status !== 200) throw new Error(`GET /openapi.json answered ${response.status}`)
  return (await response.json()) as Record<string, unknown>
}
