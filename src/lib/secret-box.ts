// Authenticated encryption of small secrets at rest (the TOTP secrets): a database dump without
// MFA_ENCRYPTION_KEY yields no second factor. AES-256-GCM, random 96-bit IV, and associated data
// that ties each box to its row, so a box copied to another user's row does not open.
import { fromBase64Url, toBase64Url, utf8 } from './encoding'

const VERSION = 'v1'
// The label makes this key good for one purpose only, should the same secret ever feed another.
const INFO = 'edgepress totp secret v1'
const MIN_SECRET_BYTES = 32
const IV_BYTES = 12
const TAG_BYTES = 16

const keys = new Map<string, Promise<CryptoKey>>()

/**
 * The AES-GCM key derived from a server secret (≥ 32 bytes) with HKDF-SHA256. Memoised per secret
 * for the isolate's life, since key import and derivation cost more than a seal.
 */
export function secretBoxKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret)
  if (key === undefined) {
    key = deriveKey(secret)
    keys.set(secret, key)
    // A failed derivation is not remembered: the next call tries again.
    key.catch(() => keys.delete(secret))
  }
  return key
}

async function deriveKey(secret: string): Promise<CryptoKey> {
  const material = utf8(secret)
  // config.ts refuses a short key with a proper message; this guards every other caller.
  if (material.length < MIN_SECRET_BYTES) {
    throw new RangeError(`The secret-box secret must be at least ${MIN_SECRET_BYTES} bytes`)
  }
  const base = await crypto.subtle.importKey('raw', material, 'HKDF', false, ['deriveKey'])
  // No salt (RFC 5869 § 3.1: optional when the input is already uniformly random); the info label
  // gives the domain separation.
  return crypto.subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: utf8(INFO) },
    base,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  )
}

/** Encrypts `plaintext` bound to `associatedData` (the owner's id): `v1.<iv>.<ciphertext+tag>`, base64url. */
export async function seal(plaintext: string, key: CryptoKey, associatedData: string): Promise<string> {
  // NIST SP 800-38D caps random 96-bit IVs at 2^32 encryptions per key; a few per user stay far below.
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES))
  const ciphertext = await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv, additionalData: utf8(associatedData) },
    key,
    utf8(plaintext),
  )
  return [VERSION, toBase64Url(iv), toBase64Url(new Uint8Array(ciphertext))].join('.')
}

/** Decrypts a sealed box; null when it is malformed, tampered with, or sealed under another key or associated data. */
export async function open(sealed: string, key: CryptoKey, associatedData: string): Promise<string | null> {
  if (typeof sealed !== 'string') return null
  const parts = sealed.split('.')
  if (parts.length !== 3 || parts[0] !== VERSION) return null
  const iv = canonicalBase64Url(parts[1]!)
  const ciphertext = canonicalBase64Url(parts[2]!)
  if (iv === null || iv.length !== IV_BYTES || ciphertext === null || ciphertext.length < TAG_BYTES) return null
  try {
    const plaintext = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv, additionalData: utf8(associatedData) },
      key,
      ciphertext,
    )
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(plaintext)
  } catch {
    // A failed tag check, a key of the wrong kind or invalid UTF-8 all mean the same: no secret.
    return null
  }
}

// One spelling per box: base64's unused trailing bits (or padding) would otherwise let a box be
// rewritten without touching its bytes.
function canonicalBase64Url(text: string): Uint8Array<ArrayBuffer> | null {
  const bytes = fromBase64Url(text)
  return bytes !== null && toBase64Url(bytes) === text ? bytes : null
}
