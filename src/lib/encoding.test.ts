import { describe, expect, it } from 'vitest'
import { constantTimeEqual, fromBase64Url, randomToken, toBase64Url, utf8 } from './encoding'

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values)

describe('utf8', () => {
  it('encodes text as UTF-8 bytes', () => {
    expect([...utf8('aé€')]).toEqual([0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac])
  })
})

describe('toBase64Url', () => {
  it.each([
    [[], ''],
    [[0x61], 'YQ'],
    [[0x61, 0x62], 'YWI'],
    [[0x61, 0x62, 0x63], 'YWJj'],
    [[0xfb, 0xff, 0xbf], '-_-_'],
  ])('encodes %j as %j (URL alphabet, no padding)', (input, expected) => {
    expect(toBase64Url(bytes(...input))).toBe(expected)
  })
})

describe('fromBase64Url', () => {
  it.each([0, 1, 2, 3, 31, 32, 33, 255])('round-trips %i random bytes', (length) => {
    const original = crypto.getRandomValues(new Uint8Array(length))
    expect(fromBase64Url(toBase64Url(original))).toEqual(original)
  })

  it('round-trips every byte value', () => {
    const original = Uint8Array.from({ length: 256 }, (_, i) => i)
    expect(fromBase64Url(toBase64Url(original))).toEqual(original)
  })

  it('accepts padded input', () => {
    expect(fromBase64Url('YQ==')).toEqual(bytes(0x61))
    expect(fromBase64Url('YWI=')).toEqual(bytes(0x61, 0x62))
  })

  it.each([
    ['standard-alphabet +', '+_8'],
    ['standard-alphabet /', '-/8'],
    ['a space', 'YW J'],
    ['a dot', 'YQ.YQ'],
    ['a non-ASCII letter', 'YWé'],
    ['padding in the middle', 'YQ==YQ'],
    ['three padding characters', 'YQ==='],
    ['an impossible length', 'YWJjZ'],
  ])('returns null for %s', (_case, text) => {
    expect(fromBase64Url(text)).toBeNull()
  })
})

describe('constantTimeEqual', () => {
  it('is true for equal byte strings, including empty ones', () => {
    expect(constantTimeEqual(bytes(1, 2, 3), bytes(1, 2, 3))).toBe(true)
    expect(constantTimeEqual(bytes(), bytes())).toBe(true)
  })

  it.each([
    ['the first byte', bytes(9, 2, 3)],
    ['the last byte', bytes(1, 2, 9)],
  ])('is false when %s differs', (_case, other) => {
    expect(constantTimeEqual(bytes(1, 2, 3), other)).toBe(false)
  })

  it.each([
    ['a prefix', bytes(1, 2)],
    ['a longer string', bytes(1, 2, 3, 0)],
    ['an empty string', bytes()],
  ])('is false against %s', (_case, other) => {
    expect(constantTimeEqual(bytes(1, 2, 3), other)).toBe(false)
    expect(constantTimeEqual(other, bytes(1, 2, 3))).toBe(false)
  })

  it('is false for zero bytes against nothing', () => {
    expect(constantTimeEqual(bytes(0), bytes())).toBe(false)
  })
})

describe('randomToken', () => {
  it('encodes 32 bytes by default', () => {
    const token = randomToken()
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(fromBase64Url(token)).toHaveLength(32)
  })

  it('encodes the requested number of bytes', () => {
    expect(fromBase64Url(randomToken(16))).toHaveLength(16)
    expect(randomToken(16)).toHaveLength(22)
  })

  it('never repeats', () => {
    const tokens = Array.from({ length: 1_000 }, () => randomToken())
    expect(new Set(tokens).size).toBe(tokens.length)
  })
})
