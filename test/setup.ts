import { applyD1Migrations } from 'cloudflare:test'
import { env } from 'cloudflare:workers'

// Storage is isolated per test file, so migrations run once per file; each test creates its own
// users (test/helpers.ts) and never depends on another test's data.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS)
