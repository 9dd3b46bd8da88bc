import type { D1Migration } from 'cloudflare:test'
import type { Env as WorkerEnv } from '../src/config'

declare global {
  namespace Cloudflare {
    interface GlobalProps {
      mainModule: typeof import('../src/index')
    }
    interface Env extends Required<Pick<WorkerEnv, 'DB' | 'REVOKED_TOKENS' | 'JWT_SECRET'>> {
      TEST_MIGRATIONS: D1Migration[]
    }
  }
}
