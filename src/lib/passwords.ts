import { constantTimeEqual, fromBase64Url, toBase64Url, utf8 } from './encoding'

// Production workerd rejects PBKDF2 above 100 000 iterations (NotSupportedError;
// cloudflare/workerd#1346) while local workerd accepts any count, so a
// test cannot catch a higher setting. This is the platform's ceiling, not a choice: the versioned
// format below lets us raise it, and upgrade stored hashes on login, when the platform does.
const PBKDF2_MAX_ITERATIONS = 100_000
const PBKDF2_ITERATIONS = PBKDF2_MAX_ITERATIONS
const SALT_BYTES = 16
const HASH_BYTES = 32

const PLAIN = 'pbkdf2-sha256'
const PEPPERED = 'pbkdf2-sha256-peppered'

interface ParsedHash {
  algorithm: typeof PLAIN | typeof PEPPERED
  iterations: number
  salt: Uint8Array<ArrayBuffer>
  hash: Uint8Array<ArrayBuffer>
}

/**
 * Hashes a password as `algorithm$iterations$salt$hash` (salt and hash base64url). With a pepper
 * the password is first keyed with HMAC-SHA256(pepper), so a stolen database alone is not enough
 * to test guesses.
 */
export async function hashPassword(password: string, pepper?: string): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES))
  const algorithm = pepper === undefined ? PLAIN : PEPPERED
  const hash = await derive(password, pepper, salt, PBKDF2_ITERATIONS)
  return [algorithm, PBKDF2_ITERATIONS, toBase64Url(salt), toBase64Url(hash)].join('$')
}

/**
 * Checks a password against a stored hash in constant time. A malformed hash, one that claims
 * more iterations than the platform allows, or a peppered hash without the pepper never matches.
 */
export async function verifyPassword(password: string, stored: string, pepper?: string): Promise<boolean> {
  const parsed = parseHash(stored)
  if (parsed === null) return false
  if (parsed.algorithm === PEPPERED && pepper === undefined) return false
  const candidate = await derive(
    password,
    parsed.algorithm === PEPPERED ? pepper : undefined,
    parsed.salt,
    parsed.iterations,
  )
  return constantTimeEqual(candidate, parsed.hash)
}

/** True when a hash that just verified should be replaced by one at today's cost and pepper. */
export function needsRehash(stored: string, pepper?: string): boolean {
  const parsed = parseHash(stored)
  if (parsed === null) return true
  const wantedAlgorithm = pepper === undefined ? PLAIN : PEPPERED
  return parsed.iterations < PBKDF2_ITERATIONS || parsed.algorithm !== wantedAlgorithm
}

/**
 * A well-formed hash of no real password. Unknown users are checked against it so that their
 * login costs the same PBKDF2 work as a wrong password (no account enumeration by timing).
 */
export function decoyHash(pepper?: string): string {
  const algorithm = pepper === undefined ? PLAIN : PEPPERED
  const zeros = (length: number) => toBase64Url(new Uint8Array(length))
  return [algorithm, PBKDF2_ITERATIONS, zeros(SALT_BYTES), zeros(HASH_BYTES)].join('$')
}

function parseHash(stored: string): ParsedHash | null {
  const parts = stored.split('$')
  if (parts.length !== 4) return null
  const [algorithm, iterationsText, saltText, hashText] = parts as [string, string, string, string]
  if (algorithm !== PLAIN && algorithm !== PEPPERED) return null
  if (!/^[1-9][0-9]{0,6}$/.test(iterationsText)) return null
  const iterations = Number(iterationsText)
  if (iterations > PBKDF2_MAX_ITERATIONS) return null
  const salt = fromBase64Url(saltText)
  const hash = fromBase64Url(hashText)
  if (salt === null || hash === null || salt.length < 8 || hash.length !== HASH_BYTES) return null
  return { algorithm, iterations, salt, hash }
}

async function derive(
  password: string,
  pepper: string | undefined,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
): Promise<Uint8Array> {
  const input = pepper === undefined ? utf8(password) : await hmacSha256(utf8(pepper), utf8(password))
  const key = await crypto.subtle.importKey('raw', input, 'PBKDF2', false, ['deriveBits'])
  const bits = await crypto.subtle.deriveBits(
    { name: 'PBKDF2', hash: 'SHA-256', salt, iterations },
    key,
    HASH_BYTES * 8,
  )
  return new Uint8Array(bits)
}

async function hmacSha256(
  keyBytes: Uint8Array<ArrayBuffer>,
  message: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  const key = await crypto.subtle.importKey('raw', keyBytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
  return new Uint8Array(await crypto.subtle.sign('HMAC', key, message))
}
