import { constantTimeEqual, fromBase64Url, toBase64Url, utf8 } from './encoding'

export type HmacPurpose = 'cursor' | 'unsubscribe' | 'csrf' | 'passkey-decoy'

const derivedKeys = new WeakMap<Uint8Array, Map<HmacPurpose, Promise<CryptoKey>>>()

/**
 * An HMAC-SHA256 key for one purpose, derived from the server secret (HMAC(secret, label)), so a
 * MAC made for cursors can never pass as an unsubscribe token or a JWT. Memoised per isolate.
 */
export function derivedHmacKey(secret: Uint8Array, purpose: HmacPurpose): Promise<CryptoKey> {
  let byPurpose = derivedKeys.get(secret)
  if (byPurpose === undefined) {
    byPurpose = new Map()
    derivedKeys.set(secret, byPurpose)
  }
  let key = byPurpose.get(purpose)
  if (key === undefined) {
    key = derive(secret, purpose)
    byPurpose.set(purpose, key)
  }
  return key
}

async function derive(secret: Uint8Array, purpose: HmacPurpose): Promise<CryptoKey> {
  const algorithm = { name: 'HMAC', hash: 'SHA-256' }
  const material = await crypto.subtle.importKey('raw', secret as Uint8Array<ArrayBuffer>, algorithm, false, ['sign'])
  const derived = await crypto.subtle.sign('HMAC', material, utf8(`edgepress ${purpose} key v1`))
  return crypto.subtle.importKey('raw', derived, algorithm, false, ['sign'])
}

/** A 128-bit MAC of `message`, base64url: far beyond guessing, short enough for URLs. */
export async function macOf(message: string, key: CryptoKey): Promise<string> {
  const signature = new Uint8Array(await crypto.subtle.sign('HMAC', key, utf8(message)))
  return toBase64Url(signature.slice(0, 16))
}

/** Checks a MAC in constant time. */
export async function isValidMac(message: string, mac: string, key: CryptoKey): Promise<boolean> {
  const presented = fromBase64Url(mac)
  // Only the canonical spelling counts: base64's unused trailing bits would otherwise give one
  // MAC several accepted spellings.
  if (presented === null || toBase64Url(presented) !== mac) return false
  return constantTimeEqual(presented, fromBase64Url(await macOf(message, key))!)
}

/** SHA-256 of a one-time token, base64url: what D1 stores instead of the token. */
export async function sha256Base64Url(text: string): Promise<string> {
  return toBase64Url(new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(text))))
}
