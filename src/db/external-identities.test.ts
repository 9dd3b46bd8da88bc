import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import { findUserByIdentity, identityOwner, linkIdentity, providersOf, unlinkIdentity } from './external-identities'
import { NO_PASSWORD } from './ways-in'
import { insertUser, userIdByEmail } from './users'

// The rule the HTTP tests check one request at a time, here under concurrency: an identity is
// never unlinked when it is the account's last way to sign in.

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')

async function newUser(passwordHash = 'a-real-hash'): Promise<{ id: number; email: string }> {
  const username = uniqueName('oidc')
  const email = `${username}@example.com`
  const [rows] = await db.batch([insertUser(db, { username, email, passwordHash }, T0)])
  return { id: rows[0]!.id, email }
}

async function linked(userId: number, providers: string[]): Promise<Record<string, string>> {
  const subs = Object.fromEntries(providers.map((provider) => [provider, uniqueName('sub')]))
  for (const provider of providers) {
    await db.batch([
      linkIdentity(
        db,
        { provider, sub: subs[provider]!, email: undefined },
        { userId: userId, addedWhileUnverified: false },
        T0,
      ),
    ])
  }
  return subs
}

const providerNames = async (userId: number) => (await providersOf(db, userId)).map((row) => row.provider)

describe('linkIdentity, findUserByIdentity, identityOwner and providersOf', () => {
  it('link an identity to a user (also through a subquery) and find it by provider and subject', async () => {
    const user = await newUser()
    const sub = uniqueName('sub')
    await db.batch([
      linkIdentity(
        db,
        { provider: 'google', sub, email: 'relay@example.com' },
        { userId: userIdByEmail(user.email), addedWhileUnverified: false },
        T0,
      ),
    ])
    await linked(user.id, ['apple'])

    expect((await findUserByIdentity(db, 'google', sub))?.id).toBe(user.id)
    expect(await findUserByIdentity(db, 'apple', sub)).toBeUndefined()
    expect(await identityOwner(db, 'google', sub)).toEqual([{ userId: user.id }])
    expect(await identityOwner(db, 'google', uniqueName('sub'))).toEqual([])
    expect(await providersOf(db, user.id)).toEqual([
      { provider: 'apple', sub: expect.any(String) },
      { provider: 'google', sub },
    ])
  })
})

describe('unlinkIdentity', () => {
  it('unlinks the only provider of an account with a password', async () => {
    const user = await newUser()
    const subs = await linked(user.id, ['apple'])
    expect(await unlinkIdentity(db, user.id, 'apple')).toEqual([{ sub: subs.apple }])
    expect(await providerNames(user.id)).toEqual([])
  })

  it('never unlinks the last way to sign in of an account without a password', async () => {
    const user = await newUser(NO_PASSWORD)
    await linked(user.id, ['apple'])
    expect(await unlinkIdentity(db, user.id, 'apple')).toEqual([])
    expect(await providerNames(user.id)).toEqual(['apple'])
  })

  it('unlinks one of two providers of an account without a password, not the second', async () => {
    const user = await newUser(NO_PASSWORD)
    await linked(user.id, ['apple', 'google'])
    expect(await unlinkIdentity(db, user.id, 'google')).toHaveLength(1)
    expect(await unlinkIdentity(db, user.id, 'apple')).toEqual([])
    expect(await providerNames(user.id)).toEqual(['apple'])
  })

  it('of two concurrent unlinks of an account’s two providers, exactly one succeeds', async () => {
    const user = await newUser(NO_PASSWORD)
    await linked(user.id, ['apple', 'google'])

    const removed = await Promise.all(['apple', 'google'].map((provider) => unlinkIdentity(db, user.id, provider)))

    expect(removed.map((rows) => rows.length).sort()).toEqual([0, 1])
    expect(await providerNames(user.id)).toHaveLength(1)
  })

  it('touches only the user’s own identity at that provider', async () => {
    const user = await newUser()
    const other = await newUser()
    await linked(other.id, ['apple'])
    expect(await unlinkIdentity(db, user.id, 'apple')).toEqual([])
    expect(await providerNames(other.id)).toEqual(['apple'])
  })
})
