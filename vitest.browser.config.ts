import { defineConfig } from 'vitest/config'

// Real-browser tests (`npm run test:browser`): plain Node vitest, not the Workers pool. The global
// setup starts `wrangler dev` and two tiny pages on loopback; the tests drive Debian's chromium
// (/usr/bin/chromium) with playwright-core. One browser-heavy file at a time, so small CI runners keep up.
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    globalSetup: ['./test/browser/global-setup.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
    fileParallelism: false,
  },
})
