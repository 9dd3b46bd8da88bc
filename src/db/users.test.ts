import { env } from 'cloudflare:workers'
import { eq, inArray } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { ApiError } from '../lib/api-error'
import { usernameKey } from '../lib/usernames'
import { createDb } from './client'
import type { BatchStatements } from './client'
import { linkIdentity } from './external-identities'
import { consumeOneTimeToken, issueOneTimeToken } from './one-time-tokens'
import { users } from './schema'
import type { UserRow } from './schema'
import { insertSession } from './sessions'
import {
  backfillUsernameKeys,
  findUserById,
  findUserByLogin,
  insertUser,
  loadAuthenticatedUser,
  loadPrivateUser,
  loadUserForChange,
  markEmailVerified,
  resetPassword,
  signUpChecks,
  toConflict,
  updateUser,
} from './users'

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const at = (ms: number): Date => new Date(T0.getTime() + ms)
// An id no test reaches: users get ids from one autoincrement counter.
const MISSING_USER_ID = 2_000_000_000

async function newUser(
  username = uniqueName('dbusers'),
  email = `${uniqueName('mail')}@example.com`,
): Promise<UserRow> {
  const [rows] = await db.batch([insertUser(db, { username, email, passwordHash: 'old-hash' }, T0)])
  return rows[0]!
}

/** Rows as they were before username keys existed (migration 0005 keyed only the ASCII ones). */
async function insertUnkeyed(usernames: string[]): Promise<number[]> {
  const inserts = usernames.map((username) =>
    db
      .insert(users)
      .values({
        username,
        usernameKey: null,
        email: `${uniqueName('unkeyed')}@example.com`,
        passwordHash: 'old-hash',
        createdAt: T0,
        updatedAt: T0,
      })
      .returning({ id: users.id }),
  )
  const results = await db.batch(inserts as unknown as BatchStatements)
  return (results as { id: number }[][]).map((rows) => rows[0]!.id)
}

async function keysOf(ids: number[]): Promise<(string | null)[]> {
  const rows = await db.select({ id: users.id, key: users.usernameKey }).from(users).where(inArray(users.id, ids))
  return ids.map((id) => rows.find((row) => row.id === id)?.key ?? null)
}

/** What toConflict throws for `err`. */
function conflictOf(err: unknown): unknown {
  try {
    toConflict(err)
  } catch (thrown) {
    return thrown
  }
  throw new Error('toConflict returned')
}

/** The error D1 (through drizzle) gives for a batch. */
function failureOf(statements: BatchStatements): Promise<unknown> {
  return db.batch(statements).then(
    () => {
      throw new Error('the batch succeeded')
    },
    (err: unknown) => err,
  )
}

describe('findUserById', () => {
  it('takes a number or its decimal text; anything else names no user', async () => {
    const user = await newUser()
    expect((await findUserById(db, user.id))?.id).toBe(user.id)
    expect((await findUserById(db, String(user.id)))?.id).toBe(user.id)
    expect(await findUserById(db, `${user.id}abc`)).toBeUndefined()
    expect(await findUserById(db, MISSING_USER_ID)).toBeUndefined()
  })
})

describe('findUserByLogin', () => {
  it('finds an email in any case, the identifier trimmed', async () => {
    const user = await newUser(uniqueName('email'), `${uniqueName('Mixed')}@Example.COM`)
    expect((await findUserByLogin(db, `  ${user.email.toUpperCase()} `))?.id).toBe(user.id)
    expect((await findUserByLogin(db, user.email.toLowerCase()))?.id).toBe(user.id)
  })

  it('finds a username by its key: any case, full case folding, NFKC and NFC', async () => {
    const suffix = uniqueName('')
    const strasse = await newUser(`Straße${suffix}`)
    const wide = await newUser(`wide${suffix}`)
    const zoe = await newUser(`Zoë${suffix}`)

    expect((await findUserByLogin(db, `STRASSE${suffix.toUpperCase()}`))?.id).toBe(strasse.id)
    expect((await findUserByLogin(db, `ｗｉｄｅ${suffix}`))?.id).toBe(wide.id)
    expect((await findUserByLogin(db, ` Zoe\u0308${suffix} `))?.id).toBe(zoe.id)
    expect(await findUserByLogin(db, `nobody${suffix}`)).toBeUndefined()
  })

  it('keys a row written before username keys existed on the way, and finds it', async () => {
    const name = `ärger${uniqueName('')}`
    const [id] = await insertUnkeyed([name])
    // SQLite's lower() folds A-Z only: without the key, `Ä` would never match `ä`.
    expect((await findUserByLogin(db, name.toUpperCase()))?.id).toBe(id)
    expect(await keysOf([id!])).toEqual([usernameKey(name)])
  })

  it('of two old rows that are one name in another case, each logs in as spelled; other spellings find the older', async () => {
    const suffix = uniqueName('')
    const [older, younger] = await insertUnkeyed([`émile${suffix}`, `Émile${suffix}`])

    expect((await findUserByLogin(db, `Émile${suffix}`))?.id).toBe(younger)
    expect((await findUserByLogin(db, `émile${suffix}`))?.id).toBe(older)
    expect((await findUserByLogin(db, `ÉMILE${suffix.toUpperCase()}`))?.id).toBe(older)
  })
})

describe('backfillUsernameKeys', () => {
  it('keys every row without one, oldest first; a key an older row holds becomes U+FFFF and the id', async () => {
    const suffix = uniqueName('')
    const ids = await insertUnkeyed([`ölaf${suffix}`, `Ölaf${suffix}`, `ñandú${suffix}`])

    expect(await backfillUsernameKeys(db)).toBe(true)

    expect(await keysOf(ids)).toEqual([`ölaf${suffix}`, `\uffff${ids[1]}`, `ñandú${suffix}`])
  })

  it('answers false while rows are left after `rounds` batches, true once none is', async () => {
    const suffix = uniqueName('')
    const ids = await insertUnkeyed(Array.from({ length: 31 }, (_, i) => `ŵ${i}${suffix}`))

    expect(await backfillUsernameKeys(db, 1)).toBe(false)
    expect(await backfillUsernameKeys(db)).toBe(true)
    expect((await keysOf(ids)).every((key) => key !== null)).toBe(true)
  })
})

describe('toConflict', () => {
  it('maps a taken username, in any case or folding, to 409 username_taken', async () => {
    const user = await newUser(`Straße${uniqueName('')}`)
    const err = await failureOf([
      insertUser(
        db,
        { username: user.username.toUpperCase(), email: `${uniqueName()}@example.com`, passwordHash: 'x' },
        T0,
      ),
    ])
    expect(conflictOf(err)).toMatchObject({ status: 409, code: 'username_taken' })
  })

  it('maps a taken email, in any case, to 409 email_taken (whatever the query text says)', async () => {
    const user = await newUser()
    const err = await failureOf([
      insertUser(db, { username: uniqueName(), email: user.email.toUpperCase(), passwordHash: 'x' }, T0),
    ])
    expect(conflictOf(err)).toMatchObject({ status: 409, code: 'email_taken' })
  })

  it('maps another unique violation to 409 conflict', async () => {
    const user = await newUser()
    const session = {
      sid: crypto.randomUUID(),
      userId: user.id,
      refresh: { jti: 'j', issuedAt: T0, expiresAt: at(1) },
      device: undefined,
    }
    await db.batch([insertSession(db, session, T0)])
    const err = await failureOf([insertSession(db, session, T0)])
    expect(conflictOf(err)).toMatchObject({ status: 409, code: 'conflict' })
  })

  it('rethrows anything else unchanged', async () => {
    const err = await failureOf([
      insertSession(
        db,
        {
          sid: crypto.randomUUID(),
          userId: MISSING_USER_ID,
          refresh: { jti: 'j', issuedAt: T0, expiresAt: at(1) },
          device: undefined,
        },
        T0,
      ),
    ])
    expect(conflictOf(err)).toBe(err)
    const plain = new Error('boom')
    expect(conflictOf(plain)).toBe(plain)
  })
})

describe('loadPrivateUser and loadAuthenticatedUser', () => {
  it('give the user (loadPrivateUser with its providers by name)', async () => {
    const user = await newUser()
    await db.batch([
      linkIdentity(
        db,
        { provider: 'zeta', sub: uniqueName('sub'), email: undefined },
        { userId: user.id, addedWhileUnverified: false },
        T0,
      ),
      linkIdentity(
        db,
        { provider: 'apple', sub: uniqueName('sub'), email: undefined },
        { userId: user.id, addedWhileUnverified: false },
        T0,
      ),
    ])
    expect(await loadPrivateUser(db, user.id)).toEqual({ user, signIns: { providers: ['apple', 'zeta'], passkeys: 0 } })
    expect(await loadAuthenticatedUser(db, user.id)).toEqual(user)
  })

  it('refuse a user that does not exist (anymore) with 401 token_invalid', async () => {
    for (const load of [loadPrivateUser, loadAuthenticatedUser]) {
      const refused = await load(db, MISSING_USER_ID).catch((err: unknown) => err)
      expect(refused).toBeInstanceOf(ApiError)
      expect(refused).toMatchObject({ status: 401, code: 'token_invalid' })
    }
  })
})

describe('loadUserForChange', () => {
  it('reads the user and the linked providers in one round trip; a missing user is undefined', async () => {
    const user = await newUser()
    await db.batch([
      linkIdentity(
        db,
        { provider: 'google', sub: uniqueName('sub'), email: undefined },
        { userId: user.id, addedWhileUnverified: false },
        T0,
      ),
    ])

    expect(await loadUserForChange(db, user.id)).toEqual({ user, signIns: { providers: ['google'], passkeys: 0 } })
    expect(await loadUserForChange(db, MISSING_USER_ID)).toEqual({
      user: undefined,
      signIns: { providers: [], passkeys: 0 },
    })
  })
})

describe('signUpChecks', () => {
  it('tells whether the email is taken (any case) and picks the first candidate no account holds', async () => {
    const suffix = uniqueName('')
    const taken = await newUser(`Straße${suffix}`)
    // An old row without a key, whose name SQLite's lower() cannot fold: it is keyed first.
    await insertUnkeyed([`Ŧaken${suffix}`])
    const free = `free${suffix}`

    expect(
      await signUpChecks(db, taken.email.toUpperCase(), [`STRASSE${suffix}`, `ŧaken${suffix}`, free, `other${suffix}`]),
    ).toEqual({ emailTaken: true, username: free })
    expect(await signUpChecks(db, `${uniqueName('unused')}@example.com`, [`strasse${suffix}`])).toEqual({
      emailTaken: false,
      username: undefined,
    })
  })
})

describe('updateUser', () => {
  it('writes only the columns given, and updatedAt', async () => {
    const user = await newUser()
    const email = `${uniqueName('changed')}@example.com`

    const [[saved]] = await db.batch([updateUser(db, user.id, { email }, at(1_000))])

    expect(saved).toEqual({ ...user, email, updatedAt: at(1_000) })
  })

  it('writes a new username with its key', async () => {
    const user = await newUser()
    const username = `Größe${uniqueName('')}`

    const [[saved]] = await db.batch([updateUser(db, user.id, { username, isAdmin: true }, at(1_000))])

    expect(saved).toEqual({
      ...user,
      username,
      usernameKey: usernameKey(username),
      isAdmin: true,
      updatedAt: at(1_000),
    })
  })
})

describe('markEmailVerified and resetPassword', () => {
  it('markEmailVerified verifies the account through a live verification token', async () => {
    const user = await newUser()
    const { token, insert } = await issueOneTimeToken(
      db,
      'email_verification',
      { userId: user.id, email: user.email },
      T0,
    )
    await db.batch([insert])

    await consumeOneTimeToken(db, 'email_verification', token, at(1_000), (live) => [
      markEmailVerified(db, live, at(1_000)),
    ])

    expect(await findUserById(db, user.id)).toMatchObject({ emailVerified: true, updatedAt: at(1_000) })
  })

  it('resetPassword sets the hash and verifies the address the link went to', async () => {
    const user = await newUser()
    const { token, insert } = await issueOneTimeToken(db, 'password_reset', { userId: user.id, email: user.email }, T0)
    await db.batch([insert])

    await consumeOneTimeToken(db, 'password_reset', token, at(1_000), (live) => [
      resetPassword(db, live, 'new-hash', at(1_000)),
    ])

    const [row] = await db.select().from(users).where(eq(users.id, user.id))
    expect(row).toMatchObject({ passwordHash: 'new-hash', emailVerified: true, updatedAt: at(1_000) })
  })
})
