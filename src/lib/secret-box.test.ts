import { describe, expect, it } from 'vitest'
import { fromBase64Url, toBase64Url } from './encoding'
import { open, seal, secretBoxKey } from './secret-box'

const SECRET = 'a-test-mfa-encryption-key-of-32-bytes-or-more'
const OTHER_SECRET = 'another-test-mfa-encryption-key-of-32-bytes'
const PLAINTEXT = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ'
const USER = 'user:42'
const SEALED_FORMAT = /^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/

/** A sealed box with one of its three parts replaced. */
function withPart(sealed: string, index: number, replace: (part: string) => string): string {
  const parts = sealed.split('.')
  parts[index] = replace(parts[index]!)
  return parts.join('.')
}

/** Flips one bit of a base64url part's bytes. */
function flipBit(part: string, byteIndex = 0): string {
  const bytes = fromBase64Url(part)!
  bytes[byteIndex]! ^= 1
  return toBase64Url(bytes)
}

describe('secretBoxKey', () => {
  it('is a non-extractable AES-GCM 256 key, memoised per secret', async () => {
    const key = await secretBoxKey(SECRET)
    expect(key.extractable).toBe(false)
    expect(key.algorithm).toMatchObject({ name: 'AES-GCM', length: 256 })
    expect(await secretBoxKey(SECRET)).toBe(key)
    expect(await secretBoxKey(OTHER_SECRET)).not.toBe(key)
  })

  it('refuses a secret shorter than 32 bytes', async () => {
    await expect(secretBoxKey('too-short')).rejects.toThrow(RangeError)
  })
})

describe('seal and open', () => {
  it('round-trips, as v1.<iv>.<ciphertext>', async () => {
    const key = await secretBoxKey(SECRET)
    const sealed = await seal(PLAINTEXT, key, USER)
    expect(sealed).toMatch(SEALED_FORMAT)
    expect(sealed).not.toContain(PLAINTEXT)
    expect(await open(sealed, key, USER)).toBe(PLAINTEXT)
  })

  it('round-trips empty and non-ASCII plaintext', async () => {
    const key = await secretBoxKey(SECRET)
    for (const plaintext of ['', 'é€😀', '\uFEFFa leading byte-order mark', 'x'.repeat(1000)]) {
      expect(await open(await seal(plaintext, key, USER), key, USER)).toBe(plaintext)
    }
  })

  it('opens under a key derived again from the same secret (another isolate)', async () => {
    const sealed = await seal(PLAINTEXT, await secretBoxKey(SECRET), USER)
    // Same derivation, fresh import: what a new isolate would do.
    const base = await crypto.subtle.importKey('raw', new TextEncoder().encode(SECRET), 'HKDF', false, ['deriveKey'])
    const fresh = await crypto.subtle.deriveKey(
      {
        name: 'HKDF',
        hash: 'SHA-256',
        salt: new Uint8Array(0),
        info: new TextEncoder().encode('edgepress totp secret v1'),
      },
      base,
      { name: 'AES-GCM', length: 256 },
      false,
      ['decrypt'],
    )
    expect(await open(sealed, fresh, USER)).toBe(PLAINTEXT)
  })

  it('seals the same plaintext differently every time (random IV)', async () => {
    const key = await secretBoxKey(SECRET)
    const [first, second] = await Promise.all([seal(PLAINTEXT, key, USER), seal(PLAINTEXT, key, USER)])
    expect(first).not.toBe(second)
    expect(first.split('.')[1]).not.toBe(second.split('.')[1])
  })

  it('does not open under another key', async () => {
    const sealed = await seal(PLAINTEXT, await secretBoxKey(SECRET), USER)
    expect(await open(sealed, await secretBoxKey(OTHER_SECRET), USER)).toBeNull()
  })

  it('does not open with other associated data (a box copied to another row)', async () => {
    const key = await secretBoxKey(SECRET)
    const sealed = await seal(PLAINTEXT, key, USER)
    for (const other of ['user:43', 'user:4', 'user:42 ', '']) {
      expect(await open(sealed, key, other)).toBeNull()
    }
  })

  it('does not open with a key that is not an AES-GCM key', async () => {
    const sealed = await seal(PLAINTEXT, await secretBoxKey(SECRET), USER)
    const hmacKey = (await crypto.subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])) as CryptoKey
    expect(await open(sealed, hmacKey, USER)).toBeNull()
  })

  it('refuses a tampered box', async () => {
    const key = await secretBoxKey(SECRET)
    const sealed = await seal(PLAINTEXT, key, USER)
    const ciphertextLength = fromBase64Url(sealed.split('.')[2]!)!.length
    const tampered = [
      withPart(sealed, 0, () => 'v2'),
      withPart(sealed, 0, () => 'V1'),
      withPart(sealed, 1, (iv) => flipBit(iv)),
      withPart(sealed, 1, (iv) => flipBit(iv, 11)),
      withPart(sealed, 2, (ciphertext) => flipBit(ciphertext)),
      withPart(sealed, 2, (ciphertext) => flipBit(ciphertext, ciphertextLength - 1)), // the tag
      withPart(sealed, 2, (ciphertext) => toBase64Url(fromBase64Url(ciphertext)!.slice(0, -1))),
      withPart(sealed, 2, (ciphertext) => `${ciphertext}AA`),
    ]
    for (const box of tampered) expect(await open(box, key, USER)).toBeNull()
  })

  it.each([
    ['the empty string', ''],
    ['a bare version', 'v1'],
    ['two parts', 'v1.AAAAAAAAAAAAAAAA'],
    ['four parts', 'v1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.AA'],
    ['a short IV', 'v1.AAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA'],
    ['a ciphertext shorter than the tag', 'v1.AAAAAAAAAAAAAAAA.AAAA'],
    ['standard base64', 'v1.AAAAAAAAAAAAAAA+.AAAAAAAAAAAAAAAAAAAAAA'],
    ['padding', 'v1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA=='],
    ['not base64 at all', 'v1.!!!.???'],
  ])('returns null, never throws, for %s', async (_case, sealed) => {
    expect(await open(sealed, await secretBoxKey(SECRET), USER)).toBeNull()
  })

  it('refuses a non-canonical spelling of a valid box', async () => {
    const key = await secretBoxKey(SECRET)
    // 3 plaintext bytes + 16 tag bytes = 19 bytes: 26 characters carrying 4 unused bits.
    const sealed = await seal('abc', key, USER)
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const last = sealed.at(-1)!
    const respelled = sealed.slice(0, -1) + alphabet[alphabet.indexOf(last) + 1]
    expect(fromBase64Url(respelled.split('.')[2]!)).toEqual(fromBase64Url(sealed.split('.')[2]!))
    expect(await open(respelled, key, USER)).toBeNull()
    expect(await open(`${sealed}=`, key, USER)).toBeNull()
    expect(await open(sealed, key, USER)).toBe('abc')
  })
})
