// `npm run create-admin` against throwaway local D1s: the real script, run through tsx as the npm
// script runs it, with EDGEPRESS_D1_PERSIST pointing it at a temporary store (scripts/d1.ts). The
// test seeds and reads each store through a connection of its own (the same scripts/d1.ts).
//
// Two stores, so that two runs of the script go at once (one per CPU: a run is ~3 s of CPU, most
// of it loading wrangler): the refusals use one, the cases that change rows the other. Never two
// processes on one store at the same time, since workerd's SQLite answers the second one
// SQLITE_BUSY: within a store the cases run in order (it.sequential), and the test's own
// connection is idle while the script runs.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { verifyPassword } from '../src/lib/passwords'
import { literal, openD1 } from './d1'
import type { D1Connection } from './d1'
import { root } from './project-root'

const PEPPER = 'create-admin-test-pepper'
const bin = (name: string): string =>
  join(root, 'node_modules', '.bin', process.platform === 'win32' ? `${name}.cmd` : name)

interface Row {
  id: number
  username: string
  email: string
  email_verified: number
  is_admin: number
  password_hash: string
}

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

/** A throwaway local D1 (a `--persist-to` folder) and the test's connection to it. */
interface Store {
  dir: string
  d1: D1Connection
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

/** A new store, migrated (as the scripts migrate it) and holding the `existing` users. */
async function openStore(): Promise<Store> {
  const dir = mkdtempSync(join(tmpdir(), 'edgepress-create-admin-'))
  const d1 = await openD1('--local', { persistTo: dir })
  const now = Date.now()
  await d1.execute(
    existing
      .map(
        (user) =>
          `INSERT INTO users (username, email, email_verified, is_admin, password_hash, created_at, updated_at)
           VALUES (${literal(user.username)}, ${literal(user.email)}, ${user.verified ? 1 : 0}, 0, 'not-a-hash', ${now}, ${now});`,
      )
      .join('\n'),
  )
  return { dir, d1 }
}

async function closeStore(store: Store | undefined): Promise<void> {
  if (store === undefined) return
  await store.d1.close()
  rmSync(store.dir, { recursive: true, force: true })
}

/**
 * Runs a command in the repository with stdin that is not a terminal (so the script can never ask
 * for a confirmation). Asynchronous, so the other store's cases go on meanwhile.
 */
function runCommand(command: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, timeout: 45_000 })
    child.stdin.end()
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stdout, stderr }))
  })
}

function createAdmin(store: Store, ...args: string[]): Promise<Run> {
  return runCommand(bin('tsx'), ['scripts/create-admin.ts', ...args], {
    EDGEPRESS_D1_PERSIST: store.dir,
    PASSWORD_PEPPER: PEPPER,
  })
}

async function usersNamed(store: Store, ...usernames: string[]): Promise<Row[]> {
  return (await store.d1.execute(
    `SELECT id, username, email, email_verified, is_admin, password_hash FROM users
     WHERE username IN (${usernames.map(literal).join(', ')}) ORDER BY id;`,
  )) as unknown as Row[]
}

describe.concurrent('npm run create-admin', () => {
  describe('refuses, and changes nothing', () => {
    let store: Store
    beforeAll(async () => {
      store = await openStore()
    })
    afterAll(() => closeStore(store))

    it.sequential('refuses to promote the account that registered the operator’s email first (unverified, another username)', async () => {
      const run = await createAdmin(
        store,
        '--username',
        'admin',
        '--email',
        'ops@corp.com',
        '--password',
        'an admin password',
      )
      expect(run.status).not.toBe(0)
      expect(run.stderr).toMatch(/already registered to another user/)
      expect(run.stderr).toMatch(/#\d+ \(mallory, ops@corp.com\)/)
      expect(await usersNamed(store, 'mallory', 'admin')).toEqual([
        expect.objectContaining({ username: 'mallory', is_admin: 0 }),
      ])
    })

    it.sequential('refuses when the username exists with another email, or the email under another username', async () => {
      const taken = await createAdmin(
        store,
        '--username',
        'ROOT',
        '--email',
        'root@corp.com',
        '--password',
        'an admin password',
      )
      expect(taken.status).not.toBe(0)
      expect(taken.stderr).toMatch(/username "ROOT" belongs to user #\d+, whose email is not root@corp.com/)
      const twoRows = await createAdmin(store, '--username', 'erin', '--email', 'frank@corp.com')
      expect(twoRows.status).not.toBe(0)
      expect(twoRows.stderr).toMatch(/two different users/)
      expect((await usersNamed(store, 'root', 'erin', 'frank')).map((row) => row.is_admin)).toEqual([0, 0, 0])
      expect(await store.d1.execute(`SELECT count(*) AS n FROM users WHERE email = 'root@corp.com';`)).toEqual([
        { n: 0 },
      ])
    })

    it.sequential('refuses to promote an account whose email is not verified, even with --promote', async () => {
      const run = await createAdmin(store, '--username', 'dana', '--email', 'dana@corp.com', '--promote')
      expect(run.status).not.toBe(0)
      expect(run.stderr).toMatch(/not verified/)
      expect((await usersNamed(store, 'dana'))[0]).toMatchObject({ is_admin: 0 })
    })

    it.sequential('leaves a store wrangler itself sees as migrated (the ledger `npm run dev` reads)', async () => {
      const args = ['d1', 'migrations', 'list', 'DB', '--local', '--persist-to', store.dir]
      const listed = await runCommand(bin('wrangler'), args, { CI: 'true', WRANGLER_SEND_METRICS: 'false' })
      expect(listed.status).toBe(0)
      expect(listed.stdout).toMatch(/No migrations to apply/)
    })
  })

  describe('creates and promotes', () => {
    let store: Store
    beforeAll(async () => {
      store = await openStore()
    })
    afterAll(() => closeStore(store))

    it.sequential('promotes a verified account named by both its username and its email only once confirmed', async () => {
      const unconfirmed = await createAdmin(store, '--username', 'Grace', '--email', 'GRACE@corp.com')
      expect(unconfirmed.status).not.toBe(0)
      expect(unconfirmed.stderr).toMatch(/--promote/)
      expect((await usersNamed(store, 'grace'))[0]).toMatchObject({ is_admin: 0 })

      const confirmed = await createAdmin(store, '--username', 'Grace', '--email', 'GRACE@corp.com', '--promote')
      expect(confirmed.stderr).toBe('')
      expect(confirmed.status).toBe(0)
      expect(confirmed.stdout).toMatch(/Promoted user #\d+ \(grace, grace@corp.com\) to administrator/)
      expect((await usersNamed(store, 'grace'))[0]).toMatchObject({ is_admin: 1, password_hash: 'not-a-hash' })
    })

    it.sequential('creates a new, verified administrator with the given password when neither exists', async () => {
      const run = await createAdmin(
        store,
        '--username',
        'heidi',
        '--email',
        'heidi@corp.com',
        '--password',
        'an admin password',
      )
      expect(run.stderr).toBe('')
      expect(run.status).toBe(0)
      expect(run.stdout).toMatch(/Created administrator #\d+ \(heidi, heidi@corp.com\)/)
      const [heidi] = await usersNamed(store, 'heidi')
      expect(heidi).toMatchObject({ email: 'heidi@corp.com', email_verified: 1, is_admin: 1 })
      expect(await verifyPassword('an admin password', heidi!.password_hash, PEPPER)).toBe(true)
    })

    it.sequential('names users by their username key: a new administrator gets one, an old unkeyed row is found in any case', async () => {
      expect(await store.d1.execute(`SELECT username_key FROM users WHERE username = 'heidi';`)).toEqual([
        { username_key: 'heidi' },
      ])
      const run = await createAdmin(store, '--username', 'ÖDÖN', '--email', 'ODON@corp.com', '--promote')
      expect(run.stderr).toBe('')
      expect(run.status).toBe(0)
      expect((await usersNamed(store, 'Ödön'))[0]).toMatchObject({ is_admin: 1 })
    })
  })
})
