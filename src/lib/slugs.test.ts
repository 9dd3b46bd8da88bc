import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SLUG_MAX_LENGTH, SLUG_PATTERN, slugCandidate, slugCandidates, slugify } from './slugs'

// The slug rules of docs/API.md § Posts (Slugs): lower case ASCII letters and digits joined by
// single `-`, accents folded, at most 80 characters, `post` when nothing is left.

/** What every slug, derived or candidate, must be. */
function expectValidSlug(slug: string): void {
  expect(slug).toMatch(SLUG_PATTERN)
  expect(slug.length).toBeLessThanOrEqual(SLUG_MAX_LENGTH)
}

describe('SLUG_PATTERN and SLUG_MAX_LENGTH', () => {
  it('are the documented ones: ^[a-z0-9]+(-[a-z0-9]+)*$, 80 characters', () => {
    expect(SLUG_MAX_LENGTH).toBe(80)
    for (const ok of ['a', '0', 'hello', 'hello-edge', 'a-1-b-2', '2026']) expect(ok).toMatch(SLUG_PATTERN)
    for (const bad of ['', '-', 'a-', '-a', 'a--b', 'A', 'hello_edge', 'café', 'a b', 'a.b', 'a/b']) {
      expect(bad).not.toMatch(SLUG_PATTERN)
    }
  })
})

describe('slugify', () => {
  it.for([
    ['Hello, edge', 'hello-edge'],
    ['Hello World', 'hello-world'],
    ['  padded  ', 'padded'],
    ['UPPER lower MiXeD', 'upper-lower-mixed'],
    ['one---two___three...four', 'one-two-three-four'],
    ['--leading and trailing--', 'leading-and-trailing'],
    ['Version 2.0 (beta)', 'version-2-0-beta'],
    ['2026: a year', '2026-a-year'],
    ['tab\there\nnewline', 'tab-here-newline'],
    ['It\'s <b>bold</b> & "quoted"', 'it-s-b-bold-b-quoted'],
  ] as const)('%j → %j', ([title, slug]) => {
    expect(slugify(title)).toBe(slug)
  })

  it.for([
    ['Café', 'cafe'],
    ['Crème brûlée', 'creme-brulee'],
    ['naïve Ångström', 'naive-angstrom'],
    ['Straße', 'strasse'],
    ['STRAẞE', 'strasse'],
    ['Æsir and Œuvre', 'aesir-and-oeuvre'],
    ['æble œuf', 'aeble-oeuf'],
    ['Øresund ø', 'oresund-o'],
    ['Łódź', 'lodz'],
    ['Đà Nẵng', 'da-nang'],
    ['ðe Þorn þing', 'de-thorn-thing'],
    ['ıstanbul İzmir', 'istanbul-izmir'],
    ['Ħamrun ħ', 'hamrun-h'],
    ['Cafe\u0301 (decomposed)', 'cafe-decomposed'],
    ['ﬁne ﬂow', 'fine-flow'],
    ['Ｆｕｌｌｗｉｄｔｈ １２３', 'fullwidth-123'],
    ['São Paulo, Zürich, Kraków', 'sao-paulo-zurich-krakow'],
  ] as const)('folds accents and ligatures: %j → %j', ([title, slug]) => {
    expect(slugify(title)).toBe(slug)
  })

  it.for([
    ['only emoji', '🎉🚀👩‍💻'],
    ['only CJK', '東京タワー'],
    ['only Cyrillic', 'Привет мир'],
    ['only punctuation', '!!! ??? ...'],
    ['only whitespace', ' \t\n '],
    ['the empty string', ''],
    ['only combining marks', '\u0301\u0308'],
  ])('is `post` when nothing is left (%s)', ([, title]) => {
    expect(slugify(title!)).toBe('post')
  })

  it('keeps the ASCII part of a mixed title', () => {
    expect(slugify('Tokyo 東京 2026 🎉')).toBe('tokyo-2026')
    expect(slugify('Привет world')).toBe('world')
  })

  it('cuts to 80 characters, never ending in `-`', () => {
    expect(slugify('a'.repeat(200))).toBe('a'.repeat(80))
    // The 80th character is a separator: it goes, leaving 79.
    const title = `${'a'.repeat(79)} bcd`
    expect(slugify(title)).toBe('a'.repeat(79))
    // Runs of separators count once.
    const words = 'word '.repeat(40)
    const slug = slugify(words)
    expectValidSlug(slug)
    expect(slug).toBe('word-'.repeat(16).slice(0, 79))
  })

  it('keeps 80 characters exactly when the title yields 80', () => {
    const title = 'x'.repeat(80)
    expect(slugify(title)).toBe(title)
  })

  it('is idempotent: the slug of a slug is itself', () => {
    for (const title of ['Hello, edge', 'Café Straße', 'a'.repeat(120), '🎉']) {
      const slug = slugify(title)
      expect(slugify(slug)).toBe(slug)
    }
  })

  it('always gives a valid slug, whatever the title (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (title) => {
        expectValidSlug(slugify(title))
      }),
      { numRuns: 500 },
    )
  })
})

describe('slugCandidate and slugCandidates', () => {
  it('are the base, then base-2, base-3 …', () => {
    expect(slugCandidate('hello', 1)).toBe('hello')
    expect(slugCandidate('hello', 2)).toBe('hello-2')
    expect(slugCandidate('hello', 3)).toBe('hello-3')
    expect(slugCandidate('hello', 1234)).toBe('hello-1234')
    expect(slugCandidates('hello', 1, 4)).toEqual(['hello', 'hello-2', 'hello-3', 'hello-4'])
    expect(slugCandidates('hello', 21, 3)).toEqual(['hello-21', 'hello-22', 'hello-23'])
  })

  it('treat n ≤ 1 as the base itself', () => {
    expect(slugCandidate('hello', 0)).toBe('hello')
    expect(slugCandidate('hello', -5)).toBe('hello')
  })

  it('shorten the base so that the whole stays within 80 characters, never ending the base in `-`', () => {
    const base = 'a'.repeat(80)
    expect(slugCandidate(base, 1)).toBe(base)
    expect(slugCandidate(base, 2)).toBe(`${'a'.repeat(78)}-2`)
    expect(slugCandidate(base, 10)).toBe(`${'a'.repeat(77)}-10`)
    expect(slugCandidate(base, 1_000_000)).toBe(`${'a'.repeat(72)}-1000000`)
    // The cut would leave `…-` before the suffix: the separator goes too (no `--`).
    const hyphenated = `${'a'.repeat(77)}-bb`
    expect(hyphenated).toHaveLength(80)
    expect(slugCandidate(hyphenated, 2)).toBe(`${'a'.repeat(77)}-2`)
    for (const n of [2, 9, 10, 99, 100, 12345]) expectValidSlug(slugCandidate(hyphenated, n))
  })

  it('are distinct and valid for any slug base (property)', () => {
    const base = fc.string({ maxLength: 120 }).map(slugify)
    // From 2 on: candidate 1 is the base itself, and a 79- or 80-character base that ends in `-<n>`
    // is also its own candidate n (shortened to make room for the suffix), so 1 is left out.
    fc.assert(
      fc.property(base, fc.integer({ min: 2, max: 50 }), fc.integer({ min: 1, max: 30 }), (slug, first, count) => {
        const candidates = slugCandidates(slug, first, count)
        expect(candidates).toHaveLength(count)
        expect(new Set(candidates).size).toBe(count)
        for (const candidate of candidates) expectValidSlug(candidate)
      }),
      { numRuns: 300 },
    )
  })
})
