// `npm run create-admin` against a throwaway local D1: the real script, run through tsx, with
// EDGEPRESS_D1_PERSIST pointing wrangler at a temporary directory (scripts/d1.ts).
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { verifyPassword } from '../src/lib/passwords'
import { applyMigrations, execute, literal } from './d1'
import { root } from './project-root'

const PEPPER = 'create-admin-test-pepper'
const persistTo = mkdtempSync(join(tmpdir(), 'edgepress-create-admin-'))
const tsx = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsx.cmd' : 'tsx')

interface Row {
  id: number
  username: string
  email: string
  email_verified: number
  is_admin: number
  password_hash: string
}

/** Runs the script with stdin that is not a terminal (so it can never ask for a confirmation). */
function createAdmin(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(tsx, ['scripts/create-admin.ts', ...args], {
    cwd: root,
    env: { ...process.env, EDGEPRESS_D1_PERSIST: persistTo, PASSWORD_PEPPER: PEPPER },
    input: '',
    encoding: 'utf8',
    timeout: 45_000,
  })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

function usersNamed(...usernames: string[]): Row[] {
  return execute(
    `SELECT id, username, email, email_verified, is_admin, password_hash FROM users
     WHERE username IN (${usernames.map(literal).join(', ')}) ORDER BY id;`,
    '--local',
  ) as unknown as Row[]
}

// Rows as the API's register endpoint leaves them (not admin; verified only when the owner followed the link).
const existing = [
  // mallory registered first with the operator's address, which she cannot verify.
  { username: 'mallory', email: 'ops@corp.com', verified: false },
  // trent took the username the operator will ask for, with his own (verified) address.
  { username: 'root', email: 'trent@evil.test', verified: true },
  { username: 'dana', email: 'dana@corp.com', verified: false },
  { username: 'erin', email: 'erin@corp.com', verified: true },
  { username: 'frank', email: 'frank@corp.com', verified: true },
  { username: 'grace', email: 'grace@corp.com', verified: true },
  // Written before username keys (migration 0005), and not yet keyed: username_key is NULL.
  { username: 'Ödön', email: 'odon@corp.com', verified: true },
]

beforeAll(() => {
  process.env.EDGEPRESS_D1_PERSIST = persistTo
  applyMigrations('--local')
  const now = Date.now()
  execute(
    existing
      .map(
        (user) =>
          `INSERT INTO users (username, email, email_verified, is_admin, password_hash, created_at, updated_at)
           VALUES (${literal(user.username)}, ${literal(user.email)}, ${user.verified ? 1 : 0}, 0, 'not-a-hash', ${now}, ${now});`,
      )
      .join('\n'),
    '--local',
  )
})

afterAll(() => {
  delete process.env.EDGEPRESS_D1_PERSIST
  rmSync(persistTo, { recursive: true, force: true })
})

describe('npm run create-admin', () => {
  it('refuses to promote the account that registered the operator’s email first (unverified, another username)', () => {
    const run = createAdmin('--username', 'admin', '--email', 'ops@corp.com', '--password', 'an admin password')
    expect(run.status).not.toBe(0)
    expect(run.stderr).toMatch(/already registered to another user/)
    expect(run.stderr).toMatch(/#\d+ \(mallory, ops@corp.com\)/)
    expect(usersNamed('mallory', 'admin')).toEqual([expect.objectContaining({ username: 'mallory', is_admin: 0 })])
  })

  it('refuses when the username exists with another email, or the email under another username', () => {
    const taken = createAdmin('--username', 'ROOT', '--email', 'root@corp.com', '--password', 'an admin password')
    expect(taken.status).not.toBe(0)
    expect(taken.stderr).toMatch(/username "ROOT" belongs to user #\d+, whose email is not root@corp.com/)
    const twoRows = createAdmin('--username', 'erin', '--email', 'frank@corp.com')
    expect(twoRows.status).not.toBe(0)
    expect(twoRows.stderr).toMatch(/two different users/)
    expect(usersNamed('root', 'erin', 'frank').map((row) => row.is_admin)).toEqual([0, 0, 0])
    expect(execute(`SELECT count(*) AS n FROM users WHERE email = 'root@corp.com';`, '--local')).toEqual([{ n: 0 }])
  })

  it('refuses to promote an account whose email is not verified, even with --promote', () => {
    const run = createAdmin('--username', 'dana', '--email', 'dana@corp.com', '--promote')
    expect(run.status).not.toBe(0)
    expect(run.stderr).toMatch(/not verified/)
    expect(usersNamed('dana')[0]).toMatchObject({ is_admin: 0 })
  })

  it('promotes a verified account named by both its username and its email only once confirmed', () => {
    const unconfirmed = createAdmin('--username', 'Grace', '--email', 'GRACE@corp.com')
    expect(unconfirmed.status).not.toBe(0)
    expect(unconfirmed.stderr).toMatch(/--promote/)
    expect(usersNamed('grace')[0]).toMatchObject({ is_admin: 0 })

    const confirmed = createAdmin('--username', 'Grace', '--email', 'GRACE@corp.com', '--promote')
    expect(confirmed.stderr).toBe('')
    expect(confirmed.status).toBe(0)
    expect(confirmed.stdout).toMatch(/Promoted user #\d+ \(grace, grace@corp.com\) to administrator/)
    expect(usersNamed('grace')[0]).toMatchObject({ is_admin: 1, password_hash: 'not-a-hash' })
  })

  it('creates a new, verified administrator with the given password when neither exists', async () => {
    const run = createAdmin('--username', 'heidi', '--email', 'heidi@corp.com', '--password', 'an admin password')
    expect(run.stderr).toBe('')
    expect(run.status).toBe(0)
    expect(run.stdout).toMatch(/Created administrator #\d+ \(heidi, heidi@corp.com\)/)
    const [heidi] = usersNamed('heidi')
    expect(heidi).toMatchObject({ email: 'heidi@corp.com', email_verified: 1, is_admin: 1 })
    expect(await verifyPassword('an admin password', heidi!.password_hash, PEPPER)).toBe(true)
  })

  it('names users by their username key: a new administrator gets one, an old unkeyed row is found in any case', () => {
    expect(execute(`SELECT username_key FROM users WHERE username = 'heidi';`, '--local')).toEqual([
      { username_key: 'heidi' },
    ])
    const run = createAdmin('--username', 'ÖDÖN', '--email', 'ODON@corp.com', '--promote')
    expect(run.stderr).toBe('')
    expect(run.status).toBe(0)
    expect(usersNamed('Ödön')[0]).toMatchObject({ is_admin: 1 })
  })
})
