import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { apiWithEnv, expectProblem, registerUser } from '../../../test/helpers'
import type { RegisteredUser } from '../../../test/helpers'
import type { Env } from '../../config'
import { getConfig } from '../../config'
import { hashPassword } from '../../lib/passwords'

// Login reads the account at a replica (d1ReplicaFirst) and re-checks it at the primary. The test
// pool's D1 has no replicas, so a replica that is behind is played by a D1 whose sessions answer
// the account's row as it was: its password hash and second-factor flag from before a change.

interface StaleAccount {
  id: number
  passwordHash: string
  mfaEnabled: boolean
}

/**
 * An env whose D1 sessions (the replica side) still see `stale`; D1 without a session is the
 * primary. `staleReads` counts the rows it answered as they were.
 */
function behindReplicaEnv(stale: StaleAccount): { env: Env; staleReads: () => number } {
  let staleReads = 0
  const staleRows = (result: D1Result) => {
    for (const row of (result.results ?? []) as Record<string, unknown>[]) {
      if (row.id === stale.id && 'password_hash' in row) {
        row.password_hash = stale.passwordHash
        row.mfa_enabled = stale.mfaEnabled ? 1 : 0
        staleReads++
      }
    }
    return result
  }
  const wrapSession = (session: D1DatabaseSession) =>
    new Proxy(session, {
      get(target, property) {
        if (property === 'batch')
          return async (statements: D1PreparedStatement[]) => (await target.batch(statements)).map(staleRows)
        const value = Reflect.get(target, property, target) as unknown
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
    })
  const DB = new Proxy(env.DB, {
    get(target, property) {
      if (property === 'withSession') return (constraint?: string) => wrapSession(target.withSession(constraint))
      const value = Reflect.get(target, property, target) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
  return { env: { ...(env as unknown as Env), DB }, staleReads: () => staleReads }
}

/** D1 calls the login made, from its Server-Timing. */
const d1Calls = (res: Response): number =>
  Number(/d1;[^,]*calls=(\d+)/.exec(res.headers.get('server-timing') ?? '')?.[1] ?? Number.NaN)

async function accountOf(user: RegisteredUser): Promise<StaleAccount> {
  const row = await env.DB.prepare('SELECT id, password_hash, mfa_enabled FROM users WHERE id = ?')
    .bind(user.id)
    .first<{ id: number; password_hash: string; mfa_enabled: number }>()
  return { id: row!.id, passwordHash: row!.password_hash, mfaEnabled: row!.mfa_enabled === 1 }
}

async function sessionCount(userId: number): Promise<number> {
  const row = await env.DB.prepare('SELECT count(*) AS n FROM sessions WHERE user_id = ?')
    .bind(userId)
    .first<{ n: number }>()
  return row!.n
}

const NEW_PASSWORD = 'a brand new passphrase 2026'

const changePasswordAtPrimary = async (user: RegisteredUser): Promise<void> => {
  const hash = await hashPassword(NEW_PASSWORD, getConfig(env).passwordPepper)
  await env.DB.prepare('UPDATE users SET password_hash = ? WHERE id = ?').bind(hash, user.id).run()
}

const enrolSecondFactorAtPrimary = async (user: RegisteredUser): Promise<void> => {
  await env.DB.prepare('UPDATE users SET mfa_enabled = 1 WHERE id = ?').bind(user.id).run()
}

/**
 * A new user whose account then changes at the primary only, and a login with `password` (the
 * registered one by default) through a replica that still has the account as it was.
 */
async function loginBehindChange(change: (user: RegisteredUser) => Promise<void>, password?: string) {
  const user = await registerUser()
  const before = await accountOf(user)
  await change(user)
  const replica = behindReplicaEnv(before)
  const res = await apiWithEnv(replica.env, 'POST', '/auth/token', {
    username: user.username,
    password: password ?? user.password,
  })
  return { user, before, res, staleReads: replica.staleReads() }
}

describe('password login with a replica behind the primary', () => {
  it('the old password, still current at the replica, is refused and starts no session', async () => {
    const { user, before, res, staleReads } = await loginBehindChange(changePasswordAtPrimary)
    await expectProblem(res, 401, 'invalid_credentials')
    // The replica's row let the old password through to the guarded batch, which kept nothing; the
    // primary's row then refused it.
    expect(staleReads).toBe(1)
    expect(d1Calls(res)).toBe(3)
    expect(await sessionCount(user.id)).toBe(0)
    // Nor did the old password's login overwrite the new hash (an upgrade or a login record).
    expect((await accountOf(user)).passwordHash).not.toBe(before.passwordHash)
  })

  it('the new password, not yet at the replica, signs in at once', async () => {
    const { user, res, staleReads } = await loginBehindChange(changePasswordAtPrimary, NEW_PASSWORD)
    expect(res.status, await res.clone().text()).toBe(200)
    expect(staleReads).toBe(1)
    expect(await res.json()).toHaveProperty('access_token')
    expect(await sessionCount(user.id)).toBe(1)
  })

  it('a second factor enrolled since is asked for, and no session starts', async () => {
    const { user, res, staleReads } = await loginBehindChange(enrolSecondFactorAtPrimary)
    const problem = await expectProblem(res, 401, 'mfa_required')
    expect(staleReads).toBe(1)
    expect(d1Calls(res)).toBe(3)
    expect(problem).toHaveProperty('mfa_token')
    expect(await sessionCount(user.id)).toBe(0)
  })
})
