// Single-use recovery codes for a lost authenticator: shown once, stored only as hashes.
// Crockford's base32 (no I, L, O or U) so a code read off paper is typed back right; what people
// type for the missing letters (O for 0, I or L for 1) is read as the digit they meant.
import { sha256Base64Url } from './hmac'

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'
const GROUPS = 4
const GROUP_LENGTH = 4
// 16 characters × 5 bits = 80 bits. The hashes are unsalted SHA-256, so whoever steals the table
// attacks every stored code at once: at 50 bits a GPU would find one of a million codes in under
// a second; at 80 bits it takes years.
const CODE_LENGTH = GROUPS * GROUP_LENGTH
const MAX_INPUT_LENGTH = 64

/** `count` new recovery codes, `xxxx-xxxx-xxxx-xxxx` (80 bits each, lower-case Crockford base32). */
export function newRecoveryCodes(count = 10): string[] {
  if (!Number.isInteger(count) || count < 1 || count > 100)
    throw new RangeError('count must be an integer from 1 to 100')
  return Array.from({ length: count }, () => {
    // 256 is a multiple of 32, so `byte & 31` picks each character uniformly.
    const bytes = crypto.getRandomValues(new Uint8Array(CODE_LENGTH))
    return format(Array.from(bytes, (byte) => ALPHABET[byte & 31]!).join(''))
  })
}

/**
 * The canonical form of a typed recovery code (case, spaces and dashes ignored; O→0, I/L→1), or
 * null when it cannot be one. Always normalise user input before hashing it.
 */
export function normalizeRecoveryCode(input: string): string | null {
  if (typeof input !== 'string' || input.length > MAX_INPUT_LENGTH) return null
  const compact = input.replace(/[\s-]/g, '')
  // ASCII is checked before case mapping: "ı".toUpperCase() is "I", which would otherwise pass as 1.
  if (!/^[0-9A-Za-z]+$/.test(compact) || compact.length !== CODE_LENGTH) return null
  const mapped = compact.toLowerCase().replace(/o/g, '0').replace(/[il]/g, '1')
  if ([...mapped].some((char) => !ALPHABET.includes(char))) return null
  return format(mapped)
}

/**
 * SHA-256 (base64url) of a code's canonical form: what the database stores. A fast hash is right
 * here because the codes are 80 random bits, not a password a person chose; a slow one would only
 * make every sign-in attempt dearer. Throws for a string that is not a code.
 */
export async function hashRecoveryCode(code: string): Promise<string> {
  const normalized = normalizeRecoveryCode(code)
  if (normalized === null) throw new TypeError('Not a recovery code: normalise user input first')
  return sha256Base64Url(normalized)
}

function format(characters: string): string {
  const groups: string[] = []
  for (let i = 0; i < characters.length; i += GROUP_LENGTH) groups.push(characters.slice(i, i + GROUP_LENGTH))
  return groups.join('-')
}
