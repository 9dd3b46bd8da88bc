import type { D1Migration } from 'cloudflare:test'
import type { Env as WorkerEnv } from '../src/config'

declare global {
  namespace Cloudflare {
    interface GlobalProps {
      mainModule: typeof import('../src/index')
    }
    interface Env extends Required<Pick<WorkerEnv, 'DB' | 'REVOKED_TOKENS' | 'REVOCATIONS' | 'JWT_SECRET'>> {
      TEST_MIGRATIONS: D1Migration[]
      /** An empty database for test/upgrade.test.ts: migrated step by step, never by test/setup.ts. */
      UPGRADE_DB: D1Database
      /** Limiters of a few requests for src/middleware/rate-limit.test.ts (vitest.config.ts). */
      SMALL_CREDENTIALS_BY_IP: RateLimit
      SMALL_CREDENTIALS_BY_ACCOUNT: RateLimit
      SMALL_WRITES_BY_USER: RateLimit
    }
  }
}
