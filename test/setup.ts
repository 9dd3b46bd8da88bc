import { applyD1Migrations } from 'cloudflare:test'
import { env } from 'cloudflare:workers'

// Runs before every test file. The files of one vitest worker share its D1 (vitest.config.ts,
// `isolate: false`), so this applies the migrations for the first file and finds nothing left to
// apply after that. Each test creates its own users and data (test/helpers.ts) and never depends
// on another test's rows.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS)
