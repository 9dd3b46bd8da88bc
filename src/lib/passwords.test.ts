import { describe, expect, it } from 'vitest'
import { toBase64Url } from './encoding'
import { decoyHash, hashPassword, needsRehash, verifyPassword } from './passwords'

const PASSWORD = 'correct horse battery staple'
const PEPPER = 'a-pepper-kept-outside-the-database'
const HASH_FORMAT = /^pbkdf2-sha256\$100000\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/
const PEPPERED_FORMAT = /^pbkdf2-sha256-peppered\$100000\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/

/** Computes a plain stored hash independently of passwords.ts, at any iteration count. */
async function pbkdf2Hash(password: string, iterations: number): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16))
  const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(password), 'PBKDF2', false, ['deriveBits'])
  const bits = await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, key, 256)
  return ['pbkdf2-sha256', iterations, toBase64Url(salt), toBase64Url(new Uint8Array(bits))].join('$')
}

/** A stored hash of PASSWORD with one of its four `$`-separated parts replaced. */
async function withPart(index: number, value: string): Promise<string> {
  const parts = (await hashPassword(PASSWORD)).split('$')
  parts[index] = value
  return parts.join('$')
}

describe('hashPassword', () => {
  it('produces pbkdf2-sha256$100000$salt$hash', async () => {
    expect(await hashPassword(PASSWORD)).toMatch(HASH_FORMAT)
  })

  it('uses a fresh salt for every hash', async () => {
    const [first, second] = await Promise.all([hashPassword(PASSWORD), hashPassword(PASSWORD)])
    expect(first).not.toBe(second)
    expect(first.split('$')[2]).not.toBe(second.split('$')[2])
  })

  it('marks a peppered hash with its own algorithm', async () => {
    expect(await hashPassword(PASSWORD, PEPPER)).toMatch(PEPPERED_FORMAT)
  })
})

describe('verifyPassword', () => {
  it('accepts the right password and refuses a wrong one', async () => {
    const stored = await hashPassword(PASSWORD)
    expect(await verifyPassword(PASSWORD, stored)).toBe(true)
    expect(await verifyPassword(`${PASSWORD}!`, stored)).toBe(false)
    expect(await verifyPassword('', stored)).toBe(false)
  })

  it('round-trips unicode passwords', async () => {
    const password = 'pässwörd 🔐 密码 ﷽'
    const stored = await hashPassword(password)
    expect(await verifyPassword(password, stored)).toBe(true)
    expect(await verifyPassword('passwörd 🔐 密码 ﷽', stored)).toBe(false)
  })

  it('accepts a hash computed independently at the current iteration count', async () => {
    expect(await verifyPassword(PASSWORD, await pbkdf2Hash(PASSWORD, 100_000))).toBe(true)
  })

  it('accepts a peppered hash only with the same pepper', async () => {
    const stored = await hashPassword(PASSWORD, PEPPER)
    expect(await verifyPassword(PASSWORD, stored, PEPPER)).toBe(true)
    expect(await verifyPassword(PASSWORD, stored)).toBe(false)
    expect(await verifyPassword(PASSWORD, stored, 'a-different-pepper')).toBe(false)
  })

  it('still accepts a plain hash once a pepper is configured', async () => {
    const stored = await hashPassword(PASSWORD)
    expect(await verifyPassword(PASSWORD, stored, PEPPER)).toBe(true)
  })

  it.each([100_001, 1_000_000])('never accepts a hash claiming %i iterations', async (iterations) => {
    const stored = await pbkdf2Hash(PASSWORD, iterations)
    expect(await verifyPassword(PASSWORD, stored)).toBe(false)
  })

  it.each([
    ['an empty string', async () => ''],
    ['three parts', async () => (await hashPassword(PASSWORD)).split('$').slice(0, 3).join('$')],
    ['five parts', async () => `${await hashPassword(PASSWORD)}$extra`],
    ['an unknown algorithm', () => withPart(0, 'argon2id')],
    ['iterations 0', () => withPart(1, '0')],
    ['negative iterations', () => withPart(1, '-100000')],
    ['non-numeric iterations', () => withPart(1, 'many')],
    ['iterations in exponent form', () => withPart(1, '1e5')],
    ['a salt that is not base64url', () => withPart(2, 'not/base64+url!')],
    ['an empty salt', () => withPart(2, '')],
    ['a hash that is not base64url', () => withPart(3, '****')],
    ['a truncated hash', async () => (await hashPassword(PASSWORD)).slice(0, -4)],
  ])('returns false, never throws, for %s', async (_case, storedOf) => {
    const stored = await storedOf()
    await expect(verifyPassword(PASSWORD, stored)).resolves.toBe(false)
    await expect(verifyPassword(PASSWORD, stored, PEPPER)).resolves.toBe(false)
  })
})

describe('needsRehash', () => {
  it('is false for a hash made today, with or without pepper', async () => {
    expect(needsRehash(await hashPassword(PASSWORD))).toBe(false)
    expect(needsRehash(await hashPassword(PASSWORD, PEPPER), PEPPER)).toBe(false)
  })

  it('is true for a hash with fewer iterations, which still verifies', async () => {
    const stored = await pbkdf2Hash(PASSWORD, 50_000)
    expect(await verifyPassword(PASSWORD, stored)).toBe(true)
    expect(needsRehash(stored)).toBe(true)
  })

  it('is true when the pepper setting and the hash disagree', async () => {
    expect(needsRehash(await hashPassword(PASSWORD), PEPPER)).toBe(true)
    expect(needsRehash(await hashPassword(PASSWORD, PEPPER))).toBe(true)
  })

  it('is true, never throws, for a malformed hash', () => {
    expect(needsRehash('')).toBe(true)
    expect(needsRehash('pbkdf2-sha256$0$AAAA$AAAA')).toBe(true)
  })
})

describe('decoyHash', () => {
  it('is a well-formed current hash', () => {
    expect(decoyHash()).toMatch(HASH_FORMAT)
    expect(decoyHash(PEPPER)).toMatch(PEPPERED_FORMAT)
    expect(needsRehash(decoyHash())).toBe(false)
    expect(needsRehash(decoyHash(PEPPER), PEPPER)).toBe(false)
  })

  it.each(['', PASSWORD, 'AAAAAAAAAAAAAAAAAAAAAA'])('never matches %j', async (password) => {
    expect(await verifyPassword(password, decoyHash())).toBe(false)
    expect(await verifyPassword(password, decoyHash(PEPPER), PEPPER)).toBe(false)
  })
})
