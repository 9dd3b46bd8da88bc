import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { derSignature } from '../../test/webauthn-authenticator'
import { ecdsaSignatureOf } from './webauthn'

// The one piece of encoding src/lib/webauthn.ts reads by hand: DER ECDSA signatures. The
// ceremonies themselves are tested over HTTP (src/routes/auth/passkeys.test.ts).

const hex = (text: string) => Uint8Array.from(text.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16))

describe('ecdsaSignatureOf', () => {
  it('turns any DER signature of two 32-byte integers back into r ‖ s', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (raw) => {
        expect(ecdsaSignatureOf(derSignature(raw), 32)).toEqual(raw)
      }),
    )
  })

  it('keeps short integers right-aligned: r = 1, s = 0x80 (a zero in front of the high bit)', () => {
    const out = ecdsaSignatureOf(hex('3007020101020200 80'.replace(' ', '')), 32)
    expect(out?.[31]).toBe(1)
    expect(out?.[63]).toBe(0x80)
    expect(out?.slice(0, 31).every((byte) => byte === 0)).toBe(true)
  })

  it('refuses what is not strict DER', () => {
    const cases = [
      '', // empty
      '3007020101020101', // sequence length wrong
      '3106020101020101', // not a SEQUENCE
      '3006030101020101', // not an INTEGER
      '30060201ff020101', // negative r
      '3007020200010201 01'.replace(' ', ''), // r with a needless leading zero
      '300602010102010100', // a byte after the sequence
      '3006020001020101', // an empty integer
      `3025022100${'01'.repeat(32)}020101`, // r of 33 bytes without a high bit
      `3026022201${'01'.repeat(33)}020101`, // r longer than the curve
      '30820006020101020101', // a long-form length
    ]
    for (const text of cases) expect(ecdsaSignatureOf(hex(text), 32), text).toBeNull()
  })
})
