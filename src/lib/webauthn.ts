import { decodeCBORToNativeValueNoLeftoverBytes } from '@oslojs/cbor'
import {
  COSEKeyType,
  ClientDataType,
  coseAlgorithmEdDSA,
  coseAlgorithmES256,
  coseAlgorithmRS256,
  coseEllipticCurveEd25519,
  coseEllipticCurveP256,
  parseAuthenticatorData,
  parseClientDataJSON,
} from '@oslojs/webauthn'
import type { AuthenticatorData, COSEPublicKey, ClientData } from '@oslojs/webauthn'
import { constantTimeEqual, toBase64Url, utf8 } from './encoding'

// The checks of WebAuthn Level 3 § 7.1 (registering a new credential) and § 7.2 (verifying an
// authentication assertion), step by step. @oslojs/webauthn parses what is encoded (CBOR,
// authenticator data, COSE keys, clientDataJSON); the decisions and the signature (WebCrypto) are
// here. Pure functions of their input: the routes fetch the challenge and the stored passkey.

/** The algorithms offered in pubKeyCredParams, in order of preference: ES256, EdDSA, RS256. */
export const PASSKEY_ALGORITHMS = [coseAlgorithmES256, coseAlgorithmEdDSA, coseAlgorithmRS256] as const

/** The relying party, as the configuration gives it. */
export interface RelyingParty {
  rpId: string
  origins: readonly string[]
}

/** Which check failed: said in logs and registration errors, never in a sign-in answer. */
export type PasskeyCheck =
  | 'client_data'
  | 'type'
  | 'challenge'
  | 'origin'
  | 'cross_origin'
  | 'attestation_object'
  | 'authenticator_data'
  | 'rp_id'
  | 'user_present'
  | 'credential'
  | 'algorithm'
  | 'user_handle'
  | 'signature'
  | 'counter'

export class PasskeyRejected extends Error {
  constructor(readonly check: PasskeyCheck) {
    super(`WebAuthn check failed: ${check}`)
    this.name = 'PasskeyRejected'
  }
}

/** The spec caps credential ids at 1023 bytes (§ 5.1). */
const MAX_CREDENTIAL_ID_BYTES = 1023

/** A new credential, checked: what the passkeys table stores of it. */
export interface NewCredential {
  credentialId: string
  publicKey: JsonWebKey
  algorithm: number
  signCount: number
  backedUp: boolean
}

/**
 * § 7.1 steps 5–27 for `response` of navigator.credentials.create(): client data of type
 * webauthn.create with the expected challenge and an accepted origin, not cross-origin; the
 * attestation object's authenticator data for this RP id, user present, with a credential whose
 * key is one of PASSKEY_ALGORITHMS. The attestation statement is not judged: the options ask for
 * `attestation: "none"`, and no decision here depends on who made the authenticator.
 */
export async function verifyRegistration(
  rp: RelyingParty,
  expectedChallenge: Uint8Array,
  response: { clientDataJSON: Uint8Array; attestationObject: Uint8Array },
): Promise<NewCredential> {
  checkClientData(rp, expectedChallenge, response.clientDataJSON, ClientDataType.Create)
  const authenticatorData = authenticatorDataOf(response.attestationObject)
  const parsed = parseAuthenticatorBytes(authenticatorData)
  await checkAuthenticatorData(rp, parsed, authenticatorData)
  const credential = parsed.credential
  if (credential === null || credential.id.length === 0 || credential.id.length > MAX_CREDENTIAL_ID_BYTES) {
    throw new PasskeyRejected('credential')
  }
  const { jwk, algorithm } = publicKeyOf(credential.publicKey)
  return {
    credentialId: toBase64Url(credential.id),
    publicKey: jwk,
    algorithm,
    signCount: parsed.signatureCounter,
    backedUp: backupStateOf(authenticatorData),
  }
}

/** A stored passkey, as an assertion is checked against it. */
export interface StoredCredential {
  publicKey: JsonWebKey
  algorithm: number
  signCount: number
  /** The owner's user handle: an assertion's userHandle, when present, must be it. */
  userHandle: string | null
}

/** What the ceremony knew before the assertion. */
export interface AssertionContext {
  /**
   * No user was identified first (usernameless): the authenticator must say whose credential it
   * is (§ 7.2 step 6), as every discoverable credential does.
   */
  requireUserHandle: boolean
}

/** What a checked assertion tells: the counter to store, and the flags. */
export interface VerifiedAssertion {
  signCount: number
  userVerified: boolean
  backedUp: boolean
}

/**
 * § 7.2 steps 7–24 for `response` of navigator.credentials.get(): client data of type
 * webauthn.get with the expected challenge and an accepted origin; authenticator data for this RP
 * id with the user present; the user handle, if sent, the owner's; the signature over
 * authenticatorData ‖ SHA-256(clientDataJSON) by the stored key; and a counter that grows, unless
 * both it and the stored one are 0 (synced passkeys report no counter).
 */
export async function verifyAssertion(
  rp: RelyingParty,
  expectedChallenge: Uint8Array,
  stored: StoredCredential,
  response: {
    clientDataJSON: Uint8Array
    authenticatorData: Uint8Array
    signature: Uint8Array
    userHandle: string | null
  },
  context: AssertionContext,
): Promise<VerifiedAssertion> {
  checkClientData(rp, expectedChallenge, response.clientDataJSON, ClientDataType.Get)
  if (context.requireUserHandle && response.userHandle === null) throw new PasskeyRejected('user_handle')
  const parsed = parseAuthenticatorBytes(response.authenticatorData)
  await checkAuthenticatorData(rp, parsed, response.authenticatorData)
  if (
    response.userHandle !== null &&
    (stored.userHandle === null || !constantTimeEqual(utf8(response.userHandle), utf8(stored.userHandle)))
  ) {
    throw new PasskeyRejected('user_handle')
  }
  const clientDataHash = new Uint8Array(await crypto.subtle.digest('SHA-256', response.clientDataJSON as BufferSource))
  const signed = new Uint8Array(response.authenticatorData.length + clientDataHash.length)
  signed.set(response.authenticatorData)
  signed.set(clientDataHash, response.authenticatorData.length)
  if (!(await signatureIsValid(stored, response.signature, signed))) throw new PasskeyRejected('signature')
  const signCount = parsed.signatureCounter
  if ((signCount !== 0 || stored.signCount !== 0) && signCount <= stored.signCount) {
    // A counter that did not grow: a cloned authenticator, or a replayed assertion.
    throw new PasskeyRejected('counter')
  }
  return { signCount, userVerified: parsed.userVerified, backedUp: backupStateOf(response.authenticatorData) }
}

function checkClientData(
  rp: RelyingParty,
  expectedChallenge: Uint8Array,
  clientDataJSON: Uint8Array,
  type: ClientDataType,
): ClientData {
  let clientData: ClientData
  try {
    clientData = parseClientDataJSON(clientDataJSON)
  } catch {
    throw new PasskeyRejected('client_data')
  }
  if (clientData.type !== type) throw new PasskeyRejected('type')
  if (!constantTimeEqual(clientData.challenge, expectedChallenge)) throw new PasskeyRejected('challenge')
  if (!rp.origins.includes(clientData.origin)) throw new PasskeyRejected('origin')
  // A ceremony run in a frame of another site: edgepress's pages never embed one.
  if (clientData.crossOrigin === true) throw new PasskeyRejected('cross_origin')
  return clientData
}

/** The authData bytes of an attestation object (CBOR map of fmt, attStmt, authData). */
function authenticatorDataOf(attestationObject: Uint8Array): Uint8Array {
  let decoded: unknown
  try {
    decoded = decodeCBORToNativeValueNoLeftoverBytes(attestationObject, 4)
  } catch {
    throw new PasskeyRejected('attestation_object')
  }
  if (typeof decoded !== 'object' || decoded === null) throw new PasskeyRejected('attestation_object')
  const { fmt, authData, attStmt } = decoded as Record<string, unknown>
  if (typeof fmt !== 'string' || typeof attStmt !== 'object' || attStmt === null || !(authData instanceof Uint8Array)) {
    throw new PasskeyRejected('attestation_object')
  }
  return authData
}

function parseAuthenticatorBytes(bytes: Uint8Array): AuthenticatorData {
  try {
    return parseAuthenticatorData(bytes)
  } catch {
    throw new PasskeyRejected('authenticator_data')
  }
}

async function checkAuthenticatorData(rp: RelyingParty, parsed: AuthenticatorData, bytes: Uint8Array): Promise<void> {
  if (!constantTimeEqual(parsed.relyingPartyIdHash, await rpIdHash(rp.rpId))) throw new PasskeyRejected('rp_id')
  if (!parsed.userPresent) throw new PasskeyRejected('user_present')
  // § 6.1: a credential that cannot be backed up (BE clear) cannot be backed up now (BS set).
  const flags = bytes[32] ?? 0
  if ((flags & FLAG_BE) === 0 && (flags & FLAG_BS) !== 0) throw new PasskeyRejected('authenticator_data')
}

const rpIdHashes = new Map<string, Promise<Uint8Array>>()

function rpIdHash(rpId: string): Promise<Uint8Array> {
  let hash = rpIdHashes.get(rpId)
  if (hash === undefined) {
    hash = crypto.subtle.digest('SHA-256', utf8(rpId)).then((digest) => new Uint8Array(digest))
    rpIdHashes.set(rpId, hash)
  }
  return hash
}

/** The flags byte's backup eligibility (BE) and backup state (BS) bits. */
const FLAG_BE = 0x08
const FLAG_BS = 0x10

/** The BS flag: the credential is backed up, i.e. synced. */
function backupStateOf(authenticatorData: Uint8Array): boolean {
  return ((authenticatorData[32] ?? 0) & FLAG_BS) !== 0
}

/** The credential's COSE key as a JWK, if it is one of PASSKEY_ALGORITHMS with its key type. */
function publicKeyOf(key: COSEPublicKey): { jwk: JsonWebKey; algorithm: number } {
  let algorithm: number
  let type: COSEKeyType
  try {
    algorithm = key.algorithm()
    type = key.type()
  } catch {
    throw new PasskeyRejected('algorithm')
  }
  try {
    if (algorithm === coseAlgorithmES256 && type === COSEKeyType.EC2) {
      const { curve, x, y } = key.ec2()
      if (curve !== coseEllipticCurveP256) throw new PasskeyRejected('algorithm')
      const jwk = { kty: 'EC', crv: 'P-256', x: toBase64Url(bigEndian(x, 32)), y: toBase64Url(bigEndian(y, 32)) }
      return { jwk, algorithm }
    }
    if (algorithm === coseAlgorithmEdDSA && type === COSEKeyType.OKP) {
      const { curve, x } = key.okp()
      if (curve !== coseEllipticCurveEd25519 || x.length !== 32) throw new PasskeyRejected('algorithm')
      return { jwk: { kty: 'OKP', crv: 'Ed25519', x: toBase64Url(x) }, algorithm }
    }
    if (algorithm === coseAlgorithmRS256 && type === COSEKeyType.RSA) {
      const { n, e } = rsaKeyOf(key)
      return { jwk: { kty: 'RSA', n: toBase64Url(bigEndian(n)), e: toBase64Url(bigEndian(e)) }, algorithm }
    }
  } catch (err) {
    if (err instanceof PasskeyRejected) throw err
    throw new PasskeyRejected('credential')
  }
  throw new PasskeyRejected('algorithm')
}

/**
 * An RS256 key's modulus and exponent. @oslojs/webauthn reads only 2048-bit moduli (with a 3-byte
 * exponent), the size Windows Hello and security keys make; any other size is refused as an
 * algorithm we do not take, not as a malformed credential.
 */
function rsaKeyOf(key: COSEPublicKey): { n: bigint; e: bigint } {
  try {
    return key.rsa()
  } catch {
    throw new PasskeyRejected('algorithm')
  }
}

/** A non-negative integer as big-endian bytes: `length` of them, or as few as it takes. */
function bigEndian(value: bigint, length?: number): Uint8Array {
  let hex = value.toString(16)
  if (hex.length % 2 === 1) hex = `0${hex}`
  const bytes = Uint8Array.from(hex.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16))
  if (length === undefined) return bytes
  if (bytes.length > length) throw new PasskeyRejected('credential')
  const padded = new Uint8Array(length)
  padded.set(bytes, length - bytes.length)
  return padded
}

type ImportAlgorithm = Parameters<typeof crypto.subtle.importKey>[2]
type VerifyAlgorithm = Parameters<typeof crypto.subtle.verify>[0]

const VERIFY_PARAMS: Record<number, { importAs: ImportAlgorithm; verifyAs: VerifyAlgorithm }> = {
  [coseAlgorithmES256]: {
    importAs: { name: 'ECDSA', namedCurve: 'P-256' },
    verifyAs: { name: 'ECDSA', hash: 'SHA-256' },
  },
  [coseAlgorithmEdDSA]: { importAs: { name: 'Ed25519' }, verifyAs: { name: 'Ed25519' } },
  [coseAlgorithmRS256]: {
    importAs: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    verifyAs: { name: 'RSASSA-PKCS1-v1_5' },
  },
}

async function signatureIsValid(stored: StoredCredential, signature: Uint8Array, signed: Uint8Array): Promise<boolean> {
  const params = VERIFY_PARAMS[stored.algorithm]
  if (params === undefined) return false
  let raw: Uint8Array | null = signature
  if (stored.algorithm === coseAlgorithmES256) raw = ecdsaSignatureOf(signature, 32)
  if (raw === null) return false
  try {
    const key = await crypto.subtle.importKey('jwk', stored.publicKey, params.importAs, false, ['verify'])
    return await crypto.subtle.verify(params.verifyAs, key, raw as BufferSource, signed as BufferSource)
  } catch {
    return false
  }
}

/**
 * An ECDSA signature as WebAuthn sends it, DER (RFC 3279: a SEQUENCE of the INTEGERs r and s), in
 * the r ‖ s form WebCrypto verifies, each `size` bytes; null unless it is strict DER. Written
 * here rather than taken from @oslojs/crypto, whose ASN.1 parser and curve tables weigh 25 KiB
 * minified for these few bytes: a P-256 signature is at most 72 bytes, so every length is short.
 */
export function ecdsaSignatureOf(der: Uint8Array, size: number): Uint8Array | null {
  if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2) return null
  const out = new Uint8Array(size * 2)
  let offset = 2
  for (const half of [0, 1]) {
    const length = der[offset + 1] ?? 0
    if (der[offset] !== 0x02 || length === 0 || length > 0x7f || offset + 2 + length > der.length) return null
    let value = der.subarray(offset + 2, offset + 2 + length)
    const first = value[0] ?? 0
    // Positive and minimal: a leading zero only where the next byte's high bit needs it.
    if (first & 0x80) return null
    if (first === 0 && length > 1 && ((value[1] ?? 0) & 0x80) === 0) return null
    if (first === 0 && length > 1) value = value.subarray(1)
    if (value.length > size) return null
    out.set(value, half * size + size - value.length)
    offset += 2 + length
  }
  return offset === der.length ? out : null
}
