import { describe, expect, it } from 'vitest'
import { hashRecoveryCode, newRecoveryCodes, normalizeRecoveryCode } from './recovery-codes'

const CODE_FORMAT = /^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$/
const CODE = '7k2m-9xqr-h3tv-0w1a'

describe('newRecoveryCodes', () => {
  it('makes ten codes by default, or as many as asked', () => {
    expect(newRecoveryCodes()).toHaveLength(10)
    expect(newRecoveryCodes(3)).toHaveLength(3)
  })

  it('formats each as xxxx-xxxx-xxxx-xxxx in lower-case Crockford base32', () => {
    for (const code of newRecoveryCodes(50)) {
      expect(code).toMatch(CODE_FORMAT)
      expect(code).not.toMatch(/[ilou]/)
      expect(normalizeRecoveryCode(code)).toBe(code)
    }
  })

  it('never repeats a code', () => {
    const codes = Array.from({ length: 20 }, () => newRecoveryCodes()).flat()
    expect(new Set(codes).size).toBe(codes.length)
  })

  it('uses the whole alphabet', () => {
    const characters = new Set(newRecoveryCodes(100).join('').replace(/-/g, ''))
    expect(characters.size).toBe(32)
  })

  it('refuses a count that is not a small positive integer', () => {
    for (const count of [0, -1, 1.5, 101, NaN]) expect(() => newRecoveryCodes(count)).toThrow(RangeError)
  })
})

describe('normalizeRecoveryCode', () => {
  it.each([
    ['the code itself', CODE],
    ['upper case', '7K2M-9XQR-H3TV-0W1A'],
    ['no dashes', '7k2m9xqrh3tv0w1a'],
    ['spaces instead of dashes', '7k2m 9xqr h3tv 0w1a'],
    ['surrounding whitespace', '  7k2m-9xqr-h3tv-0w1a\n'],
    ['other grouping', '7k2m9-xqrh3-tv0w1-a'],
    ['O for 0', '7k2m-9xqr-h3tv-Ow1a'],
    ['I for 1', '7k2m-9xqr-h3tv-0wIa'],
    ['L for 1', '7k2m-9xqr-h3tv-0wla'],
  ])('reads %s', (_case, input) => {
    expect(normalizeRecoveryCode(input)).toBe(CODE)
  })

  it.each([
    ['the empty string', ''],
    ['one character short', '7k2m-9xqr-h3tv-0w1'],
    ['one character long', '7k2m-9xqr-h3tv-0w1ab'],
    ['a U (not in the alphabet)', '7k2m-9xqr-h3tv-0w1u'],
    ['punctuation', '7k2m-9xqr-h3tv-0w1!'],
    ['a dotless ı that upper-cases to I', '7k2m-9xqr-h3tv-0wıa'],
    ['fullwidth characters', '７k2m-9xqr-h3tv-0w1a'],
    ['a long input', `${CODE}${' '.repeat(100)}`],
    ['a TOTP code', '123456'],
  ])('refuses %s', (_case, input) => {
    expect(normalizeRecoveryCode(input)).toBeNull()
  })
})

describe('hashRecoveryCode', () => {
  it('is SHA-256 of the canonical form, base64url', async () => {
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(CODE))
    const expected = btoa(String.fromCharCode(...new Uint8Array(digest)))
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
      .replace(/=+$/, '')
    expect(await hashRecoveryCode(CODE)).toBe(expected)
  })

  it('is stable across spellings of one code', async () => {
    const hash = await hashRecoveryCode(CODE)
    expect(await hashRecoveryCode('7K2M 9XQR H3TV OW1A')).toBe(hash)
    expect(await hashRecoveryCode(CODE)).toBe(hash)
  })

  it('differs for every code', async () => {
    const codes = newRecoveryCodes()
    const hashes = await Promise.all(codes.map(hashRecoveryCode))
    expect(new Set(hashes).size).toBe(codes.length)
    for (const [i, hash] of hashes.entries()) {
      expect(hash).toMatch(/^[A-Za-z0-9_-]{43}$/)
      expect(hash).not.toContain(codes[i]!.replace(/-/g, ''))
    }
  })

  it('refuses a string that is not a code', async () => {
    await expect(hashRecoveryCode('not a code')).rejects.toThrow(TypeError)
  })
})
