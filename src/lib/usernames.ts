// Usernames: which ones are acceptable, and the key that decides when two of them are the same
// name (docs/design.md § Usernames). Pure functions: the API, the database layer and the scripts
// (create-admin, seed) all use these, so a name means the same thing everywhere.

// The patterns are built on first use, not at start-up: compiling these Unicode property classes
// costs tens of milliseconds, which every cold isolate would pay before serving anything.
let patterns: { forbidden: RegExp; invisible: RegExp; visible: RegExp } | undefined

function usernamePatterns(): NonNullable<typeof patterns> {
  patterns ??= {
    /** What the basic rule refuses: whitespace, "@" (it marks an email at login), "/", "\" and control, format, unassigned, private-use or surrogate code points. */
    forbidden: /[\s@/\\\p{C}]/u,
    /**
     * Code points that render as nothing or as blank space without being whitespace: every
     * Default_Ignorable_Code_Point (joiners, variation selectors, the Hangul fillers U+115F,
     * U+1160, U+3164, U+FFA0, …), spelled out where it matters most in case an engine's tables
     * lag, plus U+2800 BRAILLE PATTERN BLANK, a symbol that looks like a space.
     */
    invisible: /[\p{Default_Ignorable_Code_Point}\u115F\u1160\u3164\uFFA0\u2800]/u,
    /** A name needs at least one character that is seen on its own: not only combining marks. */
    visible: /[\p{L}\p{N}\p{P}\p{S}]/u,
  }
  return patterns
}

const CHARACTERS_MESSAGE = 'may contain letters, digits and punctuation, but no spaces, "@", "/" or "\\"'

/**
 * Why a username (already NFC-normalised) is not acceptable, or null. Length is checked by the
 * schema; this checks the characters, both as typed and in NFKC form, so a compatibility
 * character that stands for a refused one ("＠", U+3000 IDEOGRAPHIC SPACE) is refused too.
 */
export function usernameProblem(username: string): string | null {
  const { forbidden, invisible, visible } = usernamePatterns()
  if (forbidden.test(username)) return CHARACTERS_MESSAGE
  if (invisible.test(username)) {
    return 'may not contain invisible or blank characters (such as U+3164 HANGUL FILLER or U+2800 BRAILLE PATTERN BLANK)'
  }
  const compatible = username.normalize('NFKC')
  if (forbidden.test(compatible) || invisible.test(compatible)) {
    return 'may not contain look-alikes of spaces, "@", "/" or "\\" (such as the full-width "＠")'
  }
  if (!visible.test(compatible)) return 'must contain at least one letter, digit, punctuation mark or symbol'
  return null
}

/**
 * The key two usernames share exactly when they are the same name: Unicode's compatibility
 * caseless match (the Unicode Standard § 3.13, D146: NFKD(fold(NFKD(fold(NFD(x)))))), with NFKC
 * for NFKD (equal keys either way) and, as JavaScript has no case folding, `fold` approximated by
 * lower(upper(lower(x))). That folds what toLowerCase() alone misses: "ß", "ẞ" and "SS" all become
 * "ss", final "ς" matches "σ". The unique index is on this key; login looks it up. For ASCII it is
 * exactly SQLite's lower(), which the migration that introduced it relies on.
 */
export function usernameKey(username: string): string {
  const fold = (text: string): string => text.toLowerCase().toUpperCase().toLowerCase()
  return fold(fold(username.normalize('NFKC')).normalize('NFKC')).normalize('NFKC')
}

/**
 * A username for an account created by a sign-in provider, from its email's local part: letters,
 * digits, ".", "_" and "-" only, at most 30 characters; "user" when too little is left.
 */
export function usernameFromEmail(email: string | undefined): string {
  const local = (email ?? '').split('@')[0]!.split('+')[0]!
  const kept = local.replace(/[^A-Za-z0-9._-]/g, '').slice(0, 30)
  return kept.length >= 3 && usernameProblem(kept) === null ? kept : 'user'
}
