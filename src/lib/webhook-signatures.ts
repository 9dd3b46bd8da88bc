import { constantTimeEqual, utf8 } from './encoding'

// Standard Webhooks signatures (https://www.standardwebhooks.com/, what Resend sends through
// Svix): `webhook-signature` holds space-separated `v1,<base64 HMAC-SHA256>` entries of
// "<webhook-id>.<webhook-timestamp>.<body>", keyed with the bytes of the `whsec_<base64>` secret.
// WebCrypto rather than the `standardwebhooks` package: the same rules with no bundle weight, the
// MAC taken over the body's exact bytes.

const SECRET_PREFIX = 'whsec_'
/** Signatures more than this far from the server's clock, either way, are refused (replays). */
export const WEBHOOK_TOLERANCE_SECONDS = 5 * 60
// Bounds on what a request may make us parse; real headers are far smaller.
const MAX_ID_LENGTH = 256
const MAX_SIGNATURE_HEADER_LENGTH = 4_096

export interface WebhookHeaders {
  id: string | undefined
  timestamp: string | undefined
  signature: string | undefined
}

/** Why a webhook is refused; `valid` when it is not. */
export type WebhookVerdict = 'valid' | 'missing' | 'stale' | 'mismatch'

/** The key bytes of a `whsec_<base64>` secret (at least 16 bytes); null when it is not one. */
export function webhookSecretBytes(secret: string): Uint8Array<ArrayBuffer> | null {
  if (!secret.startsWith(SECRET_PREFIX)) return null
  const encoded = secret.slice(SECRET_PREFIX.length)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return null
  try {
    const bytes = Uint8Array.from(atob(encoded), (char) => char.charCodeAt(0))
    return bytes.length >= 16 ? bytes : null
  } catch {
    return null
  }
}

const keys = new Map<string, Promise<CryptoKey>>()

/** The HMAC key of a secret, imported once per isolate. */
function keyOf(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret)
  if (key === undefined) {
    const bytes = webhookSecretBytes(secret)
    if (bytes === null) throw new Error('not a whsec_ secret')
    key = crypto.subtle.importKey('raw', bytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
    // One secret is configured at a time; a rotated one replaces it.
    keys.clear()
    keys.set(secret, key)
  }
  return key
}

/**
 * Checks a webhook's signature headers against its raw body: the timestamp must be within
 * WEBHOOK_TOLERANCE_SECONDS of `now`, and one `v1` signature must be the MAC (compared in
 * constant time). `secret` must pass webhookSecretBytes().
 */
export async function verifyWebhook(
  secret: string,
  headers: WebhookHeaders,
  body: Uint8Array,
  now: Date,
): Promise<WebhookVerdict> {
  const { id, timestamp, signature } = headers
  if (!id || !timestamp || !signature) return 'missing'
  if (id.length > MAX_ID_LENGTH || signature.length > MAX_SIGNATURE_HEADER_LENGTH) return 'mismatch'
  if (!/^\d{1,12}$/.test(timestamp)) return 'mismatch'
  if (Math.abs(now.getTime() / 1000 - Number(timestamp)) > WEBHOOK_TOLERANCE_SECONDS) return 'stale'
  const expected = await macOf(secret, utf8(`${id}.${timestamp}.`), body)
  for (const entry of signature.split(' ')) {
    const [version, encoded] = entry.split(',', 2)
    if (version !== 'v1' || encoded === undefined) continue
    const presented = fromBase64(encoded)
    if (presented !== null && constantTimeEqual(presented, expected)) return 'valid'
  }
  return 'mismatch'
}

/** The `v1,<base64>` signature of a body, as a sender makes it (tests and tools). */
export async function signWebhook(secret: string, id: string, timestamp: number, body: Uint8Array): Promise<string> {
  const mac = await macOf(secret, utf8(`${id}.${timestamp}.`), body)
  let binary = ''
  for (const byte of mac) binary += String.fromCharCode(byte)
  return `v1,${btoa(binary)}`
}

async function macOf(secret: string, prefix: Uint8Array, body: Uint8Array): Promise<Uint8Array> {
  const signed = new Uint8Array(prefix.length + body.length)
  signed.set(prefix)
  signed.set(body, prefix.length)
  return new Uint8Array(await crypto.subtle.sign('HMAC', await keyOf(secret), signed))
}

function fromBase64(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) return null
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0))
}
