import { fromBase64Url, toBase64Url as base64Url } from '../src/lib/encoding'

// A software authenticator for the passkey tests: what a platform authenticator and the browser
// together hand the API, built from WebCrypto keys. It makes `none` attestations and assertions
// for ES256 (P-256), EdDSA (Ed25519) or RS256 keys, and every part of what it sends can be bent
// (origin, RP id, type, flags, counter, the key that signs) so each server check can be broken
// on its own. Its CBOR encoder knows the few types WebAuthn uses: integers, byte and text strings,
// maps.

export { base64Url }

export type KeyKind = 'ES256' | 'Ed25519' | 'RS256'

/** The JSON a browser's PublicKeyCredential.toJSON() gives after create(). */
export interface RegistrationResponseJSON {
  id: string
  rawId: string
  type: 'public-key'
  response: { clientDataJSON: string; attestationObject: string; transports: string[] }
  authenticatorAttachment: 'platform'
  clientExtensionResults: Record<string, unknown>
}

/** The JSON a browser's PublicKeyCredential.toJSON() gives after get(). */
export interface AuthenticationResponseJSON {
  id: string
  rawId: string
  type: 'public-key'
  response: { clientDataJSON: string; authenticatorData: string; signature: string; userHandle: string | null }
  authenticatorAttachment: 'platform'
  clientExtensionResults: Record<string, unknown>
}

/** What either ceremony may be bent by. Unset: what an honest authenticator in a browser sends. */
export interface Bend {
  origin?: string
  rpId?: string
  /** clientDataJSON's type. */
  type?: string
  /** The challenge to sign, instead of the options' one (base64url). */
  challenge?: string
  crossOrigin?: boolean
  userPresent?: boolean
  userVerified?: boolean
  backedUp?: boolean
  /** The counter to report; unset: one more than the last (or 0 for a counterless passkey). */
  signCount?: number
  /** Flags to set besides those the other fields decide (bits of authenticator data byte 32). */
  extraFlags?: number
  /** Sign with another key than the credential's (assertions). */
  signWith?: CryptoKey
  /** Report this user handle (base64url, or null for none). */
  userHandle?: string | null
}

const FLAG_UP = 0x01
const FLAG_UV = 0x04
const FLAG_BE = 0x08
const FLAG_BS = 0x10
const FLAG_AT = 0x40

export class SoftAuthenticator {
  /** The credential id, base64url. */
  readonly credentialId: string
  /** The user handle the registration options gave, base64url (set by register()). */
  userHandle: string | null = null
  private counter: number

  private constructor(
    readonly kind: KeyKind,
    private readonly keys: CryptoKeyPair,
    private readonly rawId: Uint8Array,
    private readonly defaults: { origin: string; rpId: string; counting: boolean; backedUp: boolean },
  ) {
    this.credentialId = base64Url(rawId)
    this.counter = 0
  }

  /**
   * A new authenticator holding one credential. `counting: false` is a synced passkey, whose
   * counter stays 0; otherwise it grows by one per use.
   */
  static async create(
    options: {
      kind?: KeyKind
      origin?: string
      rpId?: string
      counting?: boolean
      backedUp?: boolean
      rsaModulusBits?: number
    } = {},
  ): Promise<SoftAuthenticator> {
    const kind = options.kind ?? 'ES256'
    return new SoftAuthenticator(kind, await generateKeys(kind, options.rsaModulusBits), randomBytes(32), {
      origin: options.origin ?? 'http://localhost:8787',
      rpId: options.rpId ?? 'localhost',
      counting: options.counting ?? true,
      backedUp: options.backedUp ?? false,
    })
  }

  /** The credential's public key as a JWK, as the passkeys table stores it. */
  async publicJwk(): Promise<JsonWebKey> {
    const {
      key_ops: _ops,
      ext: _ext,
      alg: _alg,
      ...key
    } = (await crypto.subtle.exportKey('jwk', this.keys.publicKey)) as JsonWebKey
    return key
  }

  /** A key pair of this authenticator's kind that is not its credential's. */
  async otherKey(): Promise<CryptoKey> {
    return (await generateKeys(this.kind)).privateKey
  }

  /** The counter the last ceremony reported. */
  get signCount(): number {
    return this.counter
  }

  /** navigator.credentials.create() for `options` (PublicKeyCredentialCreationOptionsJSON). */
  async register(
    options: { challenge: string; user: { id: string } },
    bend: Bend = {},
  ): Promise<RegistrationResponseJSON> {
    this.userHandle = options.user.id
    const clientDataJSON = this.clientData('webauthn.create', options.challenge, bend)
    const credentialData = concat(
      new Uint8Array(16), // AAGUID: zeros, as `none` attestation allows
      uint16(this.rawId.length),
      this.rawId,
      cbor(await coseKeyOf(this.kind, this.keys.publicKey)),
    )
    const authenticatorData = await this.authenticatorData(bend, FLAG_AT, credentialData)
    const attestationObject = cbor(
      new Map<CborValue, CborValue>([
        ['fmt', 'none'],
        ['attStmt', new Map()],
        ['authData', authenticatorData],
      ]),
    )
    return this.asJson({
      clientDataJSON: base64Url(clientDataJSON),
      attestationObject: base64Url(attestationObject),
      transports: ['internal', 'hybrid'],
    })
  }

  /** navigator.credentials.get() for `options` (PublicKeyCredentialRequestOptionsJSON). */
  async assert(options: { challenge: string }, bend: Bend = {}): Promise<AuthenticationResponseJSON> {
    const clientDataJSON = this.clientData('webauthn.get', options.challenge, bend)
    const authenticatorData = await this.authenticatorData(bend, 0)
    const clientDataHash = new Uint8Array(await crypto.subtle.digest('SHA-256', clientDataJSON))
    const signature = await sign(
      this.kind,
      bend.signWith ?? this.keys.privateKey,
      concat(authenticatorData, clientDataHash),
    )
    return this.asJson({
      clientDataJSON: base64Url(clientDataJSON),
      authenticatorData: base64Url(authenticatorData),
      signature: base64Url(signature),
      userHandle: bend.userHandle === undefined ? this.userHandle : bend.userHandle,
    })
  }

  /** The credential's JSON around a ceremony's `response`, as PublicKeyCredential.toJSON() wraps it. */
  private asJson<R>(response: R) {
    return {
      id: this.credentialId,
      rawId: this.credentialId,
      type: 'public-key' as const,
      response,
      authenticatorAttachment: 'platform' as const,
      clientExtensionResults: {},
    }
  }

  private clientData(type: string, challenge: string, bend: Bend): Uint8Array {
    return new TextEncoder().encode(
      JSON.stringify({
        type: bend.type ?? type,
        challenge: bend.challenge ?? challenge,
        origin: bend.origin ?? this.defaults.origin,
        crossOrigin: bend.crossOrigin ?? false,
      }),
    )
  }

  private async authenticatorData(bend: Bend, extraFlags: number, tail = new Uint8Array()): Promise<Uint8Array> {
    const rpIdHash = new Uint8Array(
      await crypto.subtle.digest('SHA-256', new TextEncoder().encode(bend.rpId ?? this.defaults.rpId)),
    )
    const backedUp = bend.backedUp ?? this.defaults.backedUp
    let flags = extraFlags | (bend.extraFlags ?? 0)
    if (bend.userPresent ?? true) flags |= FLAG_UP
    if (bend.userVerified ?? true) flags |= FLAG_UV
    if (backedUp) flags |= FLAG_BE | FLAG_BS
    const signCount = bend.signCount ?? (this.defaults.counting ? this.counter + 1 : 0)
    this.counter = signCount
    return concat(rpIdHash, Uint8Array.of(flags), uint32(signCount), tail)
  }
}

async function generateKeys(kind: KeyKind, rsaModulusBits = 2048): Promise<CryptoKeyPair> {
  const algorithm =
    kind === 'ES256'
      ? { name: 'ECDSA', namedCurve: 'P-256' }
      : kind === 'Ed25519'
        ? { name: 'Ed25519' }
        : {
            name: 'RSASSA-PKCS1-v1_5',
            modulusLength: rsaModulusBits,
            publicExponent: Uint8Array.of(1, 0, 1),
            hash: 'SHA-256',
          }
  return (await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair
}

/** The public key as a COSE_Key map (RFC 9053): EC2 P-256, OKP Ed25519 or RSA. */
async function coseKeyOf(kind: KeyKind, publicKey: CryptoKey): Promise<Map<CborValue, CborValue>> {
  const jwk = (await crypto.subtle.exportKey('jwk', publicKey)) as JsonWebKey
  const bytes = (field: string | undefined) => bytesOf(field ?? '')
  if (kind === 'ES256') {
    return new Map<CborValue, CborValue>([
      [1, 2],
      [3, -7],
      [-1, 1],
      [-2, bytes(jwk.x)],
      [-3, bytes(jwk.y)],
    ])
  }
  if (kind === 'Ed25519') {
    return new Map<CborValue, CborValue>([
      [1, 1],
      [3, -8],
      [-1, 6],
      [-2, bytes(jwk.x)],
    ])
  }
  return new Map<CborValue, CborValue>([
    [1, 3],
    [3, -257],
    [-1, bytes(jwk.n)],
    [-2, bytes(jwk.e)],
  ])
}

async function sign(kind: KeyKind, key: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  if (kind === 'ES256') {
    const raw = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, data))
    return derSignature(raw)
  }
  const name = kind === 'Ed25519' ? 'Ed25519' : 'RSASSA-PKCS1-v1_5'
  return new Uint8Array(await crypto.subtle.sign({ name }, key, data))
}

/** WebCrypto's r ‖ s as the DER SEQUENCE of two INTEGERs authenticators send. */
export function derSignature(raw: Uint8Array): Uint8Array {
  const integer = (bytes: Uint8Array) => {
    let start = 0
    while (start < bytes.length - 1 && bytes[start] === 0) start += 1
    let value = bytes.slice(start)
    if ((value[0] ?? 0) & 0x80) value = concat(Uint8Array.of(0), value)
    return concat(Uint8Array.of(0x02, value.length), value)
  }
  const body = concat(integer(raw.slice(0, 32)), integer(raw.slice(32)))
  return concat(Uint8Array.of(0x30, body.length), body)
}

export type CborValue = number | string | Uint8Array | Map<CborValue, CborValue>

/** Deterministic CBOR (RFC 8949) for integers, byte strings, text strings and maps. */
export function cbor(value: CborValue): Uint8Array<ArrayBuffer> {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error('cbor: integers only')
    return value >= 0 ? head(0, value) : head(1, -1 - value)
  }
  if (typeof value === 'string') {
    const bytes = new TextEncoder().encode(value)
    return concat(head(3, bytes.length), bytes)
  }
  if (value instanceof Uint8Array) return concat(head(2, value.length), value)
  const entries = [...value.entries()].map(([key, entry]) => concat(cbor(key), cbor(entry)))
  return concat(head(5, value.size), ...entries)
}

function head(major: number, length: number): Uint8Array<ArrayBuffer> {
  const type = major << 5
  if (length < 24) return Uint8Array.of(type | length)
  if (length < 0x100) return Uint8Array.of(type | 24, length)
  if (length < 0x10000) return concat(Uint8Array.of(type | 25), uint16(length))
  return concat(Uint8Array.of(type | 26), uint32(length))
}

function uint16(value: number): Uint8Array<ArrayBuffer> {
  return Uint8Array.of(value >>> 8, value & 0xff)
}

function uint32(value: number): Uint8Array<ArrayBuffer> {
  return Uint8Array.of(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff)
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

function randomBytes(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length))
}

/** base64url text as bytes; it must be base64url (the tests only decode what they or the API wrote). */
export function bytesOf(text: string): Uint8Array<ArrayBuffer> {
  const bytes = fromBase64Url(text)
  if (bytes === null) throw new Error(`not base64url: ${text}`)
  return bytes
}
