import { describe, expect, it } from 'vitest'
import { matchingStep, newTotpSecret, otpauthUri, totpStep } from './totp'

// RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
const RFC_SECRET = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ'
const RFC_VECTORS: [seconds: number, code8: string][] = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
]

const at = (seconds: number): Date => new Date(seconds * 1000)

/** HOTP computed with WebCrypto, independently of otpauth (RFC 4226 § 5.3). */
async function referenceCode(base32: string, step: number): Promise<string> {
  let bits = ''
  for (const char of base32) bits += 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'.indexOf(char).toString(2).padStart(5, '0')
  const secret = Uint8Array.from(bits.match(/.{8}/g)!, (byte) => parseInt(byte, 2))
  const counter = new Uint8Array(8)
  new DataView(counter.buffer).setBigUint64(0, BigInt(step))
  const key = await crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-1' }, false, ['sign'])
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, counter))
  const offset = mac[19]! & 0x0f
  const value = new DataView(mac.buffer).getUint32(offset) & 0x7fffffff
  return String(value % 1_000_000).padStart(6, '0')
}

describe('totpStep', () => {
  it.each([
    [0, 0],
    [29, 0],
    [30, 1],
    [59, 1],
    [1111111109, 37037036],
    [20000000000, 666666666],
  ])('puts second %i in step %i', (seconds, step) => {
    expect(totpStep(at(seconds))).toBe(step)
  })

  it('floors milliseconds', () => {
    expect(totpStep(new Date(29_999))).toBe(0)
    expect(totpStep(new Date(30_000))).toBe(1)
  })

  it('refuses an invalid date', () => {
    expect(() => totpStep(new Date(NaN))).toThrow(RangeError)
  })
})

describe('matchingStep', () => {
  it.each(RFC_VECTORS)('matches the RFC 6238 SHA-1 vector at %i s (%s)', (seconds, code8) => {
    expect(matchingStep(RFC_SECRET, code8.slice(-6), at(seconds), 0)).toBe(totpStep(at(seconds)))
  })

  it('agrees with an independent HOTP for fresh secrets', async () => {
    for (let i = 0; i < 5; i++) {
      const secret = newTotpSecret()
      const now = new Date()
      const code = await referenceCode(secret, totpStep(now))
      expect(matchingStep(secret, code, now, 0)).toBe(totpStep(now))
    }
  })

  it('accepts one step of drift either way and reports the step the code belongs to', () => {
    const [seconds, code8] = RFC_VECTORS[1]!
    const step = totpStep(at(seconds))
    for (const offset of [-30, 0, 30]) {
      expect(matchingStep(RFC_SECRET, code8.slice(-6), at(seconds + offset))).toBe(step)
    }
  })

  it('refuses a code two steps away, unless the drift allows it', () => {
    const [seconds, code8] = RFC_VECTORS[1]!
    const code = code8.slice(-6)
    expect(matchingStep(RFC_SECRET, code, at(seconds + 60))).toBeNull()
    expect(matchingStep(RFC_SECRET, code, at(seconds - 60))).toBeNull()
    expect(matchingStep(RFC_SECRET, code, at(seconds + 60), 2)).toBe(totpStep(at(seconds)))
    expect(matchingStep(RFC_SECRET, code, at(seconds + 30), 0)).toBeNull()
  })

  it('refuses a wrong code and a code of another secret', () => {
    const [seconds] = RFC_VECTORS[3]!
    expect(matchingStep(RFC_SECRET, '000000', at(seconds))).toBeNull()
    expect(matchingStep(newTotpSecret(), '005924', at(seconds))).toBeNull()
  })

  it.each([
    ['five digits', '05924'],
    ['seven digits', '9005924'],
    ['the eight-digit code', '89005924'],
    ['letters', '0o5924'],
    ['fullwidth digits', '８９００５９'],
    ['Arabic-Indic digits', '٠٠٥٩٢٤'],
    ['a leading space', ' 005924'],
    ['a trailing newline', '005924\n'],
    ['an inner space', '005 924'],
    ['a sign', '+05924'],
    ['the empty string', ''],
  ])('refuses %s before any work', (_case, code) => {
    const [seconds] = RFC_VECTORS[3]!
    expect(matchingStep(RFC_SECRET, '005924', at(seconds))).toBe(totpStep(at(seconds)))
    expect(matchingStep(RFC_SECRET, code, at(seconds))).toBeNull()
    // A malformed code is refused even with a secret that would throw: no HMAC is computed.
    expect(matchingStep('not base32!', code, at(seconds))).toBeNull()
  })

  it('refuses a drift outside 0..5', () => {
    expect(() => matchingStep(RFC_SECRET, '123456', new Date(), -1)).toThrow(RangeError)
    expect(() => matchingStep(RFC_SECRET, '123456', new Date(), 1.5)).toThrow(RangeError)
    expect(() => matchingStep(RFC_SECRET, '123456', new Date(), 6)).toThrow(RangeError)
  })

  it('looks at no step before 1970', () => {
    expect(matchingStep(RFC_SECRET, '287082', at(1), 1)).toBe(1)
  })
})

describe('newTotpSecret', () => {
  it('is 32 base32 characters (160 bits), different every time', () => {
    const secrets = Array.from({ length: 20 }, newTotpSecret)
    for (const secret of secrets) expect(secret).toMatch(/^[A-Z2-7]{32}$/)
    expect(new Set(secrets).size).toBe(secrets.length)
  })
})

describe('otpauthUri', () => {
  it('has the key URI shape authenticator apps read', () => {
    expect(otpauthUri(RFC_SECRET, 'ann', 'edgepress')).toBe(
      `otpauth://totp/edgepress:ann?secret=${RFC_SECRET}&issuer=edgepress&algorithm=SHA1&digits=6&period=30`,
    )
  })

  it('percent-encodes issuer and account', () => {
    const uri = otpauthUri(RFC_SECRET, 'a:b&c?d#e/f é+', 'Edge Press & Co')
    expect(uri).toBe(
      'otpauth://totp/Edge%20Press%20%26%20Co:a%3Ab%26c%3Fd%23e%2Ff%20%C3%A9%2B' +
        `?secret=${RFC_SECRET}&issuer=Edge%20Press%20%26%20Co&algorithm=SHA1&digits=6&period=30`,
    )
    const url = new URL(uri)
    expect(url.searchParams.get('issuer')).toBe('Edge Press & Co')
    expect(decodeURIComponent(url.pathname.split(':')[1]!)).toBe('a:b&c?d#e/f é+')
  })

  it('refuses an issuer with a colon, which would be read as the account separator', () => {
    expect(() => otpauthUri(RFC_SECRET, 'ann', 'edge:press')).toThrow(RangeError)
  })
})
