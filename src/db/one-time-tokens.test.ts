import { env } from 'cloudflare:workers'
import { eq, inArray, sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { sha256Base64Url } from '../lib/hmac'
import { createDb } from './client'
import {
  consumeOneTimeToken,
  issueTokenForAccountEmail,
  issueTokenForPendingSubscriber,
  findLiveToken,
  issueOneTimeToken,
  pruneOneTimeTokens,
  spendTokensOf,
} from './one-time-tokens'
import type { LiveToken } from './one-time-tokens'
import { oneTimeTokens, users } from './schema'
import type { OneTimeTokenPurpose } from './schema'
import { pendingSubscriberStatements, subscriberIdByEmail } from './subscribers'
import { insertUser, updateUser } from './users'

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const HOUR = 3_600_000
const at = (ms: number): Date => new Date(T0.getTime() + ms)

async function newUser(): Promise<{ id: number; email: string }> {
  const username = uniqueName('tokens')
  const email = `${username}@example.com`
  const [rows] = await db.batch([insertUser(db, { username, email, passwordHash: 'h' }, T0)])
  return { id: rows[0]!.id, email }
}

/** A token of `purpose` mailed to the user at `now`, stored. */
async function issued(user: { id: number; email: string }, purpose: OneTimeTokenPurpose, now = T0): Promise<string> {
  const { token, insert } = await issueOneTimeToken(db, purpose, { userId: user.id, email: user.email }, now)
  await db.batch([insert])
  return token
}

/** An effect whose every application shows: appends "+" to the owner's password hash. */
const markOwner = (live: LiveToken) => [
  db
    .update(users)
    .set({ passwordHash: sql`${users.passwordHash} || '+'` })
    .where(eq(users.id, live.userId)),
]

async function passwordHashOf(userId: number): Promise<string | undefined> {
  const [row] = await db.select({ hash: users.passwordHash }).from(users).where(eq(users.id, userId))
  return row?.hash
}

const refusal = (promise: Promise<unknown>) =>
  promise.then(
    () => 'accepted',
    (err: { code?: string }) => err.code,
  )

describe('issueOneTimeToken', () => {
  it('stores only the SHA-256 of the token, with the TTL of its purpose, once its insert runs', async () => {
    const user = await newUser()
    const { token, insert } = await issueOneTimeToken(db, 'password_reset', { userId: user.id, email: user.email }, T0)
    const tokenHash = await sha256Base64Url(token)
    const row = () => db.query.oneTimeTokens.findFirst({ where: eq(oneTimeTokens.tokenHash, tokenHash) })
    expect(await row()).toBeUndefined()

    await db.batch([insert])

    expect(await row()).toEqual({
      tokenHash,
      purpose: 'password_reset',
      userId: user.id,
      subscriberId: null,
      email: user.email,
      createdAt: T0,
      expiresAt: at(HOUR),
      usedAt: null,
    })
    expect(token).not.toBe(tokenHash)
  })

  it('gives each purpose its lifetime: verification a day, reset an hour, subscription a week', async () => {
    const user = await newUser()
    for (const [purpose, ttl] of [
      ['email_verification', 24 * HOUR],
      ['password_reset', HOUR],
      ['subscription_confirmation', 7 * 24 * HOUR],
    ] as const) {
      const token = await issued(user, purpose)
      expect(await refusal(findLiveToken(db, purpose, token, at(ttl - 1)))).toBe('accepted')
      expect(await refusal(findLiveToken(db, purpose, token, at(ttl)))).toBe('token_expired')
    }
  })
})

describe('consumeOneTimeToken', () => {
  it('spends a live token once, applying its effects, and returns its owner', async () => {
    const user = await newUser()
    const token = await issued(user, 'email_verification')

    expect(await consumeOneTimeToken(db, 'email_verification', token, at(1_000), markOwner)).toEqual({
      userId: user.id,
      subscriberId: null,
      email: user.email,
    })
    expect(await refusal(consumeOneTimeToken(db, 'email_verification', token, at(2_000), markOwner))).toBe(
      'token_invalid',
    )
    expect(await passwordHashOf(user.id)).toBe('h+')
  })

  it('of two concurrent uses, exactly one wins and the effects apply once', async () => {
    const user = await newUser()
    const token = await issued(user, 'password_reset')

    const outcomes = await Promise.all(
      [1, 2].map(() => refusal(consumeOneTimeToken(db, 'password_reset', token, at(1_000), markOwner))),
    )

    expect(outcomes.sort()).toEqual(['accepted', 'token_invalid'])
    expect(await passwordHashOf(user.id)).toBe('h+')
  })

  it('refuses an expired token with 400 token_expired, changing nothing', async () => {
    const user = await newUser()
    const token = await issued(user, 'password_reset')

    await expect(consumeOneTimeToken(db, 'password_reset', token, at(HOUR), markOwner)).rejects.toMatchObject({
      status: 400,
      code: 'token_expired',
    })
    expect(await passwordHashOf(user.id)).toBe('h')
  })

  it('refuses a token of another purpose, a used one (even once expired) and an unknown one: token_invalid', async () => {
    const user = await newUser()
    const reset = await issued(user, 'password_reset')
    const used = await issued(user, 'password_reset')
    await consumeOneTimeToken(db, 'password_reset', used, at(1_000))

    expect(await refusal(consumeOneTimeToken(db, 'email_verification', reset, at(1_000), markOwner))).toBe(
      'token_invalid',
    )
    // Expired for its own purpose, but refused as another purpose's token: never token_expired.
    expect(await refusal(consumeOneTimeToken(db, 'email_verification', reset, at(HOUR)))).toBe('token_invalid')
    expect(await refusal(consumeOneTimeToken(db, 'password_reset', used, at(HOUR)))).toBe('token_invalid')
    expect(await refusal(consumeOneTimeToken(db, 'password_reset', 'no-such-token', at(1_000)))).toBe('token_invalid')
    expect(await passwordHashOf(user.id)).toBe('h')
    // The reset token is still live for its own purpose.
    expect(await refusal(consumeOneTimeToken(db, 'password_reset', reset, at(1_000)))).toBe('accepted')
  })

  it('refuses a user’s token once the account’s email changed, and again works if it changes back (any case)', async () => {
    const user = await newUser()
    const token = await issued(user, 'email_verification')
    await db.batch([updateUser(db, user.id, { email: `${uniqueName('moved')}@example.com` }, at(1))])

    expect(await refusal(findLiveToken(db, 'email_verification', token, at(1_000)))).toBe('token_invalid')
    expect(await refusal(consumeOneTimeToken(db, 'email_verification', token, at(1_000), markOwner))).toBe(
      'token_invalid',
    )
    expect(await passwordHashOf(user.id)).toBe('h')

    await db.batch([updateUser(db, user.id, { email: user.email.toUpperCase() }, at(2))])
    expect(await refusal(consumeOneTimeToken(db, 'email_verification', token, at(1_000)))).toBe('accepted')
  })

  it('gives the effects the subscriber of a subscriber’s token (not subject to any account address)', async () => {
    const email = `${uniqueName('reader')}@example.com`
    const { token, insert } = await issueOneTimeToken(
      db,
      'subscription_confirmation',
      { subscriberId: subscriberIdByEmail(email), email },
      T0,
    )
    await db.batch([
      ...pendingSubscriberStatements(db, { email, name: null, unsubscribeTokenHash: uniqueName('hash') }, T0, {
        max: 1_000,
        since: T0,
      }),
      insert,
    ])

    const owner = await consumeOneTimeToken(db, 'subscription_confirmation', token, at(1_000))

    expect(owner).toMatchObject({ userId: null, email })
    expect(owner.subscriberId).toBeGreaterThan(0)
  })
})

describe('findLiveToken', () => {
  it('gives the owner of a live token without spending it', async () => {
    const user = await newUser()
    const token = await issued(user, 'password_reset')

    expect(await findLiveToken(db, 'password_reset', token, at(1_000))).toEqual({
      userId: user.id,
      subscriberId: null,
      email: user.email,
    })
    expect(await refusal(consumeOneTimeToken(db, 'password_reset', token, at(1_000)))).toBe('accepted')
    expect(await refusal(findLiveToken(db, 'password_reset', token, at(1_000)))).toBe('token_invalid')
  })
})

describe('spendTokensOf', () => {
  it('spends every unused token of the purpose the user holds, except the one named', async () => {
    const user = await newUser()
    const other = await newUser()
    const [first, second, kept] = [
      await issued(user, 'password_reset'),
      await issued(user, 'password_reset'),
      await issued(user, 'password_reset'),
    ]
    const verification = await issued(user, 'email_verification')
    const othersReset = await issued(other, 'password_reset')

    await db.batch([spendTokensOf(db, user.id, 'password_reset', at(1_000), await sha256Base64Url(kept))])

    expect(await refusal(findLiveToken(db, 'password_reset', first, at(2_000)))).toBe('token_invalid')
    expect(await refusal(findLiveToken(db, 'password_reset', second, at(2_000)))).toBe('token_invalid')
    expect(await refusal(findLiveToken(db, 'password_reset', kept, at(2_000)))).toBe('accepted')
    expect(await refusal(findLiveToken(db, 'email_verification', verification, at(2_000)))).toBe('accepted')
    expect(await refusal(findLiveToken(db, 'password_reset', othersReset, at(2_000)))).toBe('accepted')
  })

  it('without an exception spends them all, and keeps the first spending time of a used one', async () => {
    const user = await newUser()
    const used = await issued(user, 'password_reset')
    await consumeOneTimeToken(db, 'password_reset', used, at(1_000))
    const live = await issued(user, 'password_reset')

    await db.batch([spendTokensOf(db, user.id, 'password_reset', at(2_000))])

    const [usedHash, liveHash] = [await sha256Base64Url(used), await sha256Base64Url(live)]
    const rows = await db
      .select({ tokenHash: oneTimeTokens.tokenHash, usedAt: oneTimeTokens.usedAt })
      .from(oneTimeTokens)
      .where(inArray(oneTimeTokens.tokenHash, [usedHash, liveHash]))
    const usedAt = (hash: string) => rows.find((row) => row.tokenHash === hash)?.usedAt
    expect(usedAt(usedHash)).toEqual(at(1_000))
    expect(usedAt(liveHash)).toEqual(at(2_000))
  })
})

describe('the per-recipient limit', () => {
  const tokensTo = async (email: string): Promise<number> => {
    const row = await env.DB.prepare('SELECT count(*) AS n FROM one_time_tokens WHERE lower(email) = lower(?)')
      .bind(email)
      .first<{ n: number }>()
    return row!.n
  }

  it('counts the tokens of the purpose mailed to the address in any case since `since`', async () => {
    const address = `${uniqueName('Count')}@Example.com`
    const user = { id: (await newUser()).id, email: address }
    await issued(user, 'email_verification', at(-1))
    await issued({ ...user, email: address.toUpperCase() }, 'email_verification', T0)
    await issued(user, 'password_reset', T0)
    const limit = { max: 2, since: T0 }

    // One verification since T0 (the one before it does not count), the reset is another purpose.
    const second = await issueOneTimeToken(db, 'email_verification', { userId: user.id, email: address }, at(1), limit)
    await db.batch([second.insert])
    const third = await issueOneTimeToken(db, 'email_verification', { userId: user.id, email: address }, at(2), limit)
    await db.batch([third.insert])

    expect(await tokensTo(address)).toBe(4)
  })

  it('holds under a burst: of 10 concurrent issues with room for 3, exactly 3 land', async () => {
    const address = `${uniqueName('burst')}@example.com`
    const user = { id: (await newUser()).id, email: address }
    const limit = { max: 3, since: T0 }
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        const { insert } = await issueOneTimeToken(
          db,
          'email_verification',
          { userId: user.id, email: address },
          at(1),
          limit,
        )
        await db.batch([insert])
      }),
    )
    expect(await tokensTo(address)).toBe(3)
  })

  it('issueTokenForAccountEmail issues for the account with the address (any case), and for no other address', async () => {
    const user = await newUser()
    const limit = { max: 3, since: T0 }
    const found = await issueTokenForAccountEmail(db, 'password_reset', user.email.toUpperCase(), T0, limit)
    const unknown = await issueTokenForAccountEmail(db, 'password_reset', `nobody-${user.email}`, T0, limit)
    await db.batch([found.insert, unknown.insert])

    const owner = await consumeOneTimeToken(db, 'password_reset', found.token, at(1_000))
    expect(owner).toMatchObject({ userId: user.id, email: user.email })
    await expect(consumeOneTimeToken(db, 'password_reset', unknown.token, at(1_000))).rejects.toMatchObject({
      code: 'token_invalid',
    })
  })

  it('issueTokenForPendingSubscriber issues only for a pending subscriber', async () => {
    const email = `${uniqueName('pending')}@example.com`
    const limit = { max: 3, since: T0 }
    const early = await issueTokenForPendingSubscriber(db, email, T0, limit)
    await db.batch([early.insert])
    await db.batch(
      pendingSubscriberStatements(db, { email, name: null, unsubscribeTokenHash: uniqueName('h') }, T0, limit),
    )
    const issuedNow = await issueTokenForPendingSubscriber(db, email, T0, limit)
    await db.batch([issuedNow.insert])

    await expect(consumeOneTimeToken(db, 'subscription_confirmation', early.token, at(1_000))).rejects.toMatchObject({
      code: 'token_invalid',
    })
    expect(await consumeOneTimeToken(db, 'subscription_confirmation', issuedNow.token, at(1_000))).toMatchObject({
      email,
    })
  })
})

describe('pruneOneTimeTokens', () => {
  it('deletes the tokens that expired before the cutoff, keeping the one expiring at it', async () => {
    // Long ago, so that no other test's token is old enough to be pruned with them.
    const cutoff = new Date('2001-01-01T00:00:00.000Z')
    const user = await newUser()
    const gone = await issued(user, 'password_reset', new Date(cutoff.getTime() - HOUR - 1))
    const atCutoff = await issued(user, 'password_reset', new Date(cutoff.getTime() - HOUR))
    const live = await issued(user, 'password_reset')

    await db.batch([pruneOneTimeTokens(db, cutoff)])

    const hashes = await Promise.all([gone, atCutoff, live].map((token) => sha256Base64Url(token)))
    const left = await db
      .select({ tokenHash: oneTimeTokens.tokenHash })
      .from(oneTimeTokens)
      .where(inArray(oneTimeTokens.tokenHash, hashes))
    expect(left.map((row) => row.tokenHash).sort()).toEqual([hashes[1], hashes[2]].sort())
  })
})
