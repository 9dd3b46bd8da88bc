import type { D1Migration } from 'cloudflare:test'
import type { Env } from '../src/config'

declare global {
  namespace Cloudflare {
    interface Env extends Required<Pick<import('../src/config').Env, 'DB' | 'REVOKED_TOKENS' | 'JWT_SECRET'>> {
      TEST_MIGRATIONS: D1Migration[]
    }
  }
}

export type { Env }
