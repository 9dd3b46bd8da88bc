import { createRequire } from 'node:module'
import { cloudflareTest, readD1Migrations } from '@cloudflare/vitest-pool-workers'
import { configDefaults, defineConfig } from 'vitest/config'
import { handleMailProviderRequest, isMailProviderRequest } from './test/mail-provider'
import { TEST_PROVIDERS, handleProviderRequest } from './test/oidc-provider'

const require = createRequire(import.meta.url)

export const TEST_JWT_SECRET = 'test-only-secret-with-at-least-32-bytes!!'

export default defineConfig(async () => ({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: './wrangler.toml' },
      miniflare: {
        // The limiters of wrangler.toml with smaller limits, still far above what one test sends, and
        // three more with limits of a few requests: src/middleware/rate-limit.test.ts routes the
        // worker's limiters to those, so each of its bursts is a handful of requests.
        ratelimits: {
          CREDENTIALS_BY_IP: { simple: { limit: 60, period: 60 } },
          CREDENTIALS_BY_ACCOUNT: { simple: { limit: 20, period: 60 } },
          WRITES_BY_USER: { simple: { limit: 120, period: 60 } },
          SMALL_CREDENTIALS_BY_IP: { simple: { limit: 4, period: 60 } },
          SMALL_CREDENTIALS_BY_ACCOUNT: { simple: { limit: 3, period: 60 } },
          SMALL_WRITES_BY_USER: { simple: { limit: 4, period: 60 } },
        },
        // The worker's whole outbound network in the tests: the fake OpenID Connect provider
        // (test/oidc-provider.ts) serves JWKS at a loopback address; anything else answers 502.
        outboundService: (request: unknown) =>
          isMailProviderRequest(request as Request)
            ? handleMailProviderRequest(request as Request)
            : handleProviderRequest(request as Request),
        // A second, empty database for test/upgrade.test.ts, which fills it at an older schema
        // version and then applies the newer migrations (the app's DB is migrated by test/setup.ts).
        d1Databases: { UPGRADE_DB: 'upgrade-db' },
        bindings: {
          TEST_MIGRATIONS: await readD1Migrations('./migrations'),
          JWT_SECRET: TEST_JWT_SECRET,
          // One log line per request would bury test failures; src/middleware/observe.test.ts turns it back on.
          LOG_REQUESTS: 'false',
          CORS_ORIGINS: 'https://app.example.com,http://localhost:5173',
          MFA_ENCRYPTION_KEY: 'test-only-mfa-encryption-key-of-32-bytes!!',
          OIDC_PROVIDERS: JSON.stringify(TEST_PROVIDERS),
        },
      },
    }),
  ],
  // @rowanmanning/feed-parser (the feed tests' real parser) require()s these two; their default
  // resolution in workerd is the ES build, which require() cannot read. Their CommonJS builds can.
  resolve: {
    alias: [
      { find: /^html-entities$/, replacement: require.resolve('html-entities') },
      { find: /^fast-xml-parser$/, replacement: require.resolve('fast-xml-parser') },
    ],
  },
  test: {
    setupFiles: ['./test/setup.ts'],
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // Real-browser tests run in Node against `wrangler dev` (vitest.browser.config.ts).
    exclude: [...configDefaults.exclude, 'test/browser/**'],
    // Test files share their worker's runtime (one Miniflare, one module graph, one D1) instead of
    // starting a fresh one each: the app is built once per worker, not once per file, which halves
    // the suite. Every test creates its own users and data and never counts rows it did not write.
    isolate: false,
    // Both cores: the tests are CPU-bound in workerd (PBKDF2, SQLite), not waiting on anything.
    maxWorkers: 2,
    // Timeouts guard against hangs, not slowness: on a small, busy CI runner the 5 s default is too tight.
    testTimeout: 60_000,
    // The first file in a vitest worker pays the app's first build in its beforeAll.
    hookTimeout: 60_000,
    // The worker's console goes straight to workerd's output, not through vitest's RPC: the queue
    // consumer and the NewsletterSender log (the console transport prints every email) after the
    // test that caused it has ended, and a log still in flight when vitest closes a file's RPC
    // made the run hang ("Closing rpc while onUserConsoleLog was pending").
    disableConsoleIntercept: true,
  },
}))
