import { defineConfig } from 'vitest/config'

// Tests of the Node scripts and of the SDK as a package (`npm run test:scripts`): plain Node vitest, not the Workers pool. They run
// the real scripts through tsx against throwaway local D1s (EDGEPRESS_D1_PERSIST, scripts/d1.ts); a
// run takes a few seconds, several while the machine is busy, hence the generous timeouts.
export default defineConfig({
  test: {
    include: ['scripts/**/*.test.ts', 'client/test/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
})
