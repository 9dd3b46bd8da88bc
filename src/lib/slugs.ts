// Slugs: the stable, readable part of a post's URL. Derived once from the title (a later title
// change keeps the slug, so published links keep working) or chosen by the author.

export const SLUG_MAX_LENGTH = 80
export const SLUG_PATTERN = /^[a-z0-9]+(-[a-z0-9]+)*$/

/** The slug of a title whose letters all fold away (only emoji, only CJK …). */
const FALLBACK_SLUG = 'post'

// Latin letters that NFKD does not split into a base letter and a mark.
const FOLDS: Record<string, string> = {
  ß: 'ss',
  ẞ: 'ss',
  æ: 'ae',
  Æ: 'ae',
  œ: 'oe',
  Œ: 'oe',
  ø: 'o',
  Ø: 'o',
  đ: 'd',
  Đ: 'd',
  ð: 'd',
  Ð: 'd',
  ł: 'l',
  Ł: 'l',
  þ: 'th',
  Þ: 'th',
  ı: 'i',
  ħ: 'h',
  Ħ: 'h',
}
const FOLDABLE = new RegExp(`[${Object.keys(FOLDS).join('')}]`, 'gu')

/**
 * The slug a title suggests: lower case ASCII letters and digits, runs of anything else turned
 * into one `-`, accented letters folded to their base (`Café` → `cafe`, `Straße` → `strasse`),
 * at most SLUG_MAX_LENGTH characters, `post` when nothing is left.
 */
export function slugify(title: string): string {
  const folded = title
    .replace(FOLDABLE, (letter) => FOLDS[letter] ?? letter)
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
  const slug = folded.replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '')
  return truncateSlug(slug, SLUG_MAX_LENGTH) || FALLBACK_SLUG
}

/** The slug cut to `max` characters, never ending in `-`. */
function truncateSlug(slug: string, max: number): string {
  return slug.length <= max ? slug : slug.slice(0, max).replace(/-+$/, '')
}

/**
 * The n-th candidate for `base`: the base itself, then `base-2`, `base-3` …, the base shortened
 * so that the whole stays within SLUG_MAX_LENGTH.
 */
export function slugCandidate(base: string, n: number): string {
  if (n <= 1) return base
  const suffix = `-${n}`
  return `${truncateSlug(base, SLUG_MAX_LENGTH - suffix.length)}${suffix}`
}

/** Candidates `first` … `first + count - 1` of `base`, to look up in one query. */
export function slugCandidates(base: string, first: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => slugCandidate(base, first + i))
}
