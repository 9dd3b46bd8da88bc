import { macOf } from './hmac'

// An unsubscribe token is a MAC of the subscriber's address under a key derived for this purpose
// from the server secret. It never expires and works any number of times (unsubscribing twice is
// harmless), every later email can carry it again without storing it, and the subscribers row
// keeps only its SHA-256 for the lookup.

/** The unsubscribe token for an address (case-insensitive, like the address's uniqueness). */
export function unsubscribeTokenFor(email: string, key: CryptoKey): Promise<string> {
  return macOf(`unsubscribe:${email.toLowerCase()}`, key)
}

/** Cheap shape check before any lookup: 128 bits of base64url. */
export function isWellFormedUnsubscribeToken(token: string): boolean {
  return /^[A-Za-z0-9_-]{22}$/.test(token)
}
