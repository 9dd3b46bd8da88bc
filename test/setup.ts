import { applyD1Migrations, runDurableObjectAlarm } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { publisherOf } from '../src/sessions/revocation-keys'

// Runs before every test file. The files of one vitest worker share its D1 (vitest.config.ts,
// `isolate: false`), so this applies the migrations for the first file and finds nothing left to
// apply after that. Each test creates its own users and data (test/helpers.ts) and never depends
// on another test's rows.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS)

// The shared revocation filter exists in every deployment once its first copy is written
// (docs/design.md § Revocation); the tests start from there, so that a signed-in request's reads
// are those of the steady state: one KV read, not the exact-key fallback of an empty namespace.
const publisher = publisherOf(env.REVOCATIONS)
if ((await publisher.lastPublished()) === undefined) {
  await publisher.ensurePublished()
  await runDurableObjectAlarm(publisher)
  // The alarm may have started on its own (then runDurableObjectAlarm returns at once): wait for it.
  while ((await publisher.lastPublished()) === undefined) await scheduler.wait(10)
}
