import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { usernameKey, usernameProblem } from './usernames'

// These run in workerd, so they also prove its V8 knows \p{Default_Ignorable_Code_Point}.

describe('usernameProblem', () => {
  it.for([
    'alice',
    'Émile',
    'zoë_名前',
    "o'brien.d-j",
    'straße',
    'Ωμέγα',
    '🦊fox',
    'e\u0301e\u0301e\u0301'.normalize('NFC'),
    'ﬃ_ligature',
  ])('accepts %s', (name) => {
    expect(usernameProblem(name)).toBeNull()
  })

  it.for([
    ['a space', 'two words', /no spaces/],
    ['"@"', 'at@sign', /no spaces, "@"/],
    ['a control character', 'tab\u0009bed', /no spaces/],
    ['U+200B ZERO WIDTH SPACE (a format character)', 'zero\u200Bwidth', /no spaces/],
    ['U+3164 HANGUL FILLER', '\u3164\u3164\u3164', /invisible or blank/],
    ['U+2800 BRAILLE PATTERN BLANK', '\u2800\u2800\u2800', /invisible or blank/],
    ['U+115F HANGUL CHOSEONG FILLER', 'a\u115Fb', /invisible or blank/],
    ['U+1160 HANGUL JUNGSEONG FILLER', 'a\u1160b', /invisible or blank/],
    ['U+FFA0 HALFWIDTH HANGUL FILLER', 'a\uFFA0b', /invisible or blank/],
    ['U+034F COMBINING GRAPHEME JOINER', 'a\u034Fb', /invisible or blank/],
    ['U+FE0F VARIATION SELECTOR-16', 'admin\uFE0F', /invisible or blank/],
    ['U+17B4 KHMER VOWEL INHERENT AQ', 'ab\u17B4', /invisible or blank/],
    ['a full-width "@" (NFKC "@")', 'user＠example', /look-alikes/],
    ['a full-width solidus (NFKC "/")', 'a／b', /look-alikes/],
    ['U+FE68 SMALL REVERSE SOLIDUS (NFKC "\\")', 'a\uFE68b', /look-alikes/],
    ['combining marks only', '\u0301\u0302\u0303', /at least one letter/],
  ] as const)('refuses %s', ([, name, message]) => {
    expect(usernameProblem(name)).toMatch(message)
  })

  it('refuses every Default_Ignorable_Code_Point, whatever else the name holds', () => {
    const ignorable = /\p{Default_Ignorable_Code_Point}/u
    for (let cp = 0; cp <= 0x10ffff; cp += 1) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue
      const char = String.fromCodePoint(cp)
      if (ignorable.test(char)) expect(usernameProblem(`ab${char}cd`), `U+${cp.toString(16)}`).not.toBeNull()
    }
  })
})

describe('usernameKey', () => {
  it.for([
    ['non-ASCII case', ['Émile', 'émile', 'ÉMILE', 'E\u0301mile']],
    ['ß, ẞ and SS (full case folding)', ['straße', 'STRASSE', 'Strasse', 'STRAẞE', 'straẞe']],
    ['final and medial sigma', ['ΟΔΟΣ', 'οδος', 'οδοσ']],
    ['compatibility forms: full-width, ligatures, mathematical letters', ['office', 'oﬃce', 'ＯＦＦＩＣＥ', '𝐨𝐟𝐟𝐢𝐜𝐞']],
    ['the Kelvin sign and K', ['\u212Aelvin', 'kelvin']],
    ['titlecase digraphs', ['ǅemal', 'Ǆemal', 'ǆemal', 'DŽemal']],
    // Beyond Unicode's case folding (ı folds to itself there): through "I", the dotless ı meets i.
    ['the dotless ı with i (one look-alike less)', ['admın', 'admin', 'ADMIN']],
  ] as const)('folds %s to one key', ([, names]) => {
    expect(new Set(names.map(usernameKey)).size).toBe(1)
  })

  it('keeps different names apart', () => {
    const names = ['alice', 'alicé', 'aIice', 'ålice', 'straße', 'strase', 'ǆ', 'dz']
    expect(new Set(names.map(usernameKey)).size).toBe(names.length)
  })

  it('is SQLite lower() on ASCII, which migration 0005 relies on to key old ASCII rows', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((cp) => String.fromCharCode(cp)) }),
        (name) => {
          expect(usernameKey(name)).toBe(name.replace(/[A-Z]/g, (letter) => letter.toLowerCase()))
        },
      ),
    )
  })

  it('is idempotent and ignores case and normalisation form', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 12 }), (name) => {
        const key = usernameKey(name)
        expect(usernameKey(key)).toBe(key)
        for (const variant of [name.toUpperCase(), name.toLowerCase(), name.normalize('NFD'), name.normalize('NFKC')]) {
          expect(usernameKey(variant)).toBe(key)
        }
      }),
      { numRuns: 2000 },
    )
  })

  it('never yields U+FFFF, which marks an old row keyed apart (src/db/users.ts)', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary' }),
        (name) => !usernameKey(name).includes('\uFFFF') || name.includes('\uFFFF'),
      ),
    )
  })
})
