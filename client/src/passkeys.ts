import type { components } from './openapi.js'

// Passkey ceremonies for @edgepress/client. The API speaks WebAuthn's JSON forms; in a browser
// PublicKeyCredential.parse*OptionsFromJSON and credential.toJSON() translate them (Chrome 129,
// Safari 18.4, Firefox 119 and later). A native app or an older browser passes its own ceremony.

type Schemas = components['schemas']

export type PasskeyRequestOptions = Schemas['PublicKeyCredentialRequestOptionsJSON']
export type PasskeyCreationOptions = Schemas['PublicKeyCredentialCreationOptionsJSON']
export type PasskeyAssertion = Schemas['AuthenticationResponseJSON']
export type PasskeyAttestation = Schemas['RegistrationResponseJSON']
export type Passkey = Schemas['Passkey']

export interface SignInWithPasskeyOptions {
  /** Lists that account's passkeys in allowCredentials; unset: usernameless (the passkey picker). */
  username?: string
  /** Runs navigator.credentials.get() or its native equivalent; default: the browser's. */
  getCredential?: (options: PasskeyRequestOptions) => Promise<PasskeyAssertion>
  /** For the browser default: 'conditional' offers the passkeys in the username field's autofill. */
  mediation?: CredentialMediationRequirement
  signal?: AbortSignal
}

export interface RegisterPasskeyOptions {
  /** The passkey's name in the account's list; default: "Passkey on <device>". */
  name?: string
  /** Runs navigator.credentials.create() or its native equivalent; default: the browser's. */
  createCredential?: (options: PasskeyCreationOptions) => Promise<PasskeyAttestation>
  signal?: AbortSignal
}

/** navigator.credentials' mediation (declared here: the SDK builds without the DOM library too). */
export type CredentialMediationRequirement = 'conditional' | 'optional' | 'required' | 'silent'

// The parts of the browser's WebAuthn the defaults use, found at run time.
interface WebAuthnJson {
  parseRequestOptionsFromJSON?(options: unknown): unknown
  parseCreationOptionsFromJSON?(options: unknown): unknown
}
interface Credentials {
  get(request: unknown): Promise<unknown>
  create(request: unknown): Promise<unknown>
}

function browserWebAuthn(): { json: Required<WebAuthnJson>; credentials: Credentials } {
  const scope = globalThis as { PublicKeyCredential?: WebAuthnJson; navigator?: { credentials?: Credentials } }
  const json = scope.PublicKeyCredential
  const credentials = scope.navigator?.credentials
  if (
    json?.parseRequestOptionsFromJSON === undefined ||
    json.parseCreationOptionsFromJSON === undefined ||
    !credentials
  ) {
    throw new Error('No WebAuthn JSON support here: pass getCredential / createCredential (docs/clients.md).')
  }
  return { json: json as Required<WebAuthnJson>, credentials }
}

function jsonOf<T>(credential: unknown): T {
  // null: the person closed the dialog without choosing (browsers mostly throw NotAllowedError).
  if (credential === null) throw new DOMException('No passkey was chosen.', 'NotAllowedError')
  return (credential as unknown as { toJSON(): T }).toJSON()
}

/** navigator.credentials.get() for the API's request options, as AuthenticationResponseJSON. */
export async function browserAssertion(
  options: PasskeyRequestOptions,
  extra: { mediation?: CredentialMediationRequirement; signal?: AbortSignal } = {},
): Promise<PasskeyAssertion> {
  const { json, credentials } = browserWebAuthn()
  const request: Record<string, unknown> = { publicKey: json.parseRequestOptionsFromJSON(options) }
  if (extra.mediation !== undefined) request.mediation = extra.mediation
  if (extra.signal !== undefined) request.signal = extra.signal
  return jsonOf(await credentials.get(request))
}

/** navigator.credentials.create() for the API's creation options, as RegistrationResponseJSON. */
export async function browserAttestation(
  options: PasskeyCreationOptions,
  extra: { signal?: AbortSignal } = {},
): Promise<PasskeyAttestation> {
  const { json, credentials } = browserWebAuthn()
  const request: Record<string, unknown> = { publicKey: json.parseCreationOptionsFromJSON(options) }
  if (extra.signal !== undefined) request.signal = extra.signal
  return jsonOf(await credentials.create(request))
}
