import { createRoute, z } from '@hono/zod-openapi'
import { requireRecentSignIn, requireUser } from '../../middleware/authenticate'
import { limitByClientIp } from '../../middleware/rate-limit'
import { Timestamp, idParams, json, jsonBody, problems } from '../../router'
import { CookieModeQuery, SignedInSchema, atPrimary } from './auth.schemas'

// Passkeys (WebAuthn): registering one while signed in, signing in with one (usernameless or for
// a username), and managing them. docs/API.md § Passkeys; the checks are src/lib/webauthn.ts.

/** base64url as WebAuthn's JSON serialisation writes binary fields (padding tolerated). */
function base64Url(maxLength: number) {
  return z
    .string()
    .min(1)
    .max(maxLength)
    .regex(/^[A-Za-z0-9_-]+={0,2}$/, { message: 'must be base64url' })
}

const CredentialId = base64Url(1400).openapi({ description: 'The credential id, base64url' })

export const TRANSPORTS = ['ble', 'cable', 'hybrid', 'internal', 'nfc', 'smart-card', 'usb'] as const
export type Transport = (typeof TRANSPORTS)[number]

const ChallengeId = z.string().min(1).max(64).openapi({ description: 'From the options answer' })

/** What the browser's `PublicKeyCredential.toJSON()` gives after navigator.credentials.create(). */
const RegistrationResponse = z
  .object({
    id: CredentialId,
    rawId: CredentialId,
    type: z.literal('public-key'),
    response: z.object({
      clientDataJSON: base64Url(4096),
      attestationObject: base64Url(16_384),
      // Unknown transports are dropped rather than refused: the list grows with new hardware.
      transports: z.array(z.string().max(32)).max(16).optional(),
    }),
    authenticatorAttachment: z.string().max(32).nullable().optional(),
    clientExtensionResults: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi('RegistrationResponseJSON')

/** What the browser's `PublicKeyCredential.toJSON()` gives after navigator.credentials.get(). */
export const AuthenticationResponse = z
  .object({
    id: CredentialId,
    rawId: CredentialId,
    type: z.literal('public-key'),
    response: z.object({
      clientDataJSON: base64Url(4096),
      authenticatorData: base64Url(4096),
      signature: base64Url(1024),
      userHandle: base64Url(128).nullable().optional(),
    }),
    authenticatorAttachment: z.string().max(32).nullable().optional(),
    clientExtensionResults: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi('AuthenticationResponseJSON')

export const PasskeyAssertionInput = z
  .object({ challenge_id: ChallengeId, response: AuthenticationResponse })
  .openapi('PasskeyAssertion')

const Descriptor = z.object({
  type: z.literal('public-key'),
  id: z.string(),
  transports: z.array(z.enum(TRANSPORTS)).optional(),
})

const CreationOptions = z
  .object({
    challenge: z.string(),
    rp: z.object({ id: z.string(), name: z.string() }),
    user: z.object({
      id: z.string().openapi({ description: 'An opaque handle (base64url), the same for all your passkeys' }),
      name: z.string(),
      displayName: z.string(),
    }),
    pubKeyCredParams: z.array(z.object({ type: z.literal('public-key'), alg: z.number().int() })),
    timeout: z.number().int(),
    excludeCredentials: z.array(Descriptor),
    authenticatorSelection: z.object({
      residentKey: z.literal('required'),
      requireResidentKey: z.literal(true),
      userVerification: z.literal('preferred'),
    }),
    attestation: z.literal('none'),
    extensions: z.object({ credProps: z.literal(true) }),
  })
  .openapi('PublicKeyCredentialCreationOptionsJSON')

const RequestOptions = z
  .object({
    challenge: z.string(),
    rpId: z.string(),
    timeout: z.number().int(),
    allowCredentials: z.array(Descriptor),
    userVerification: z.literal('preferred'),
  })
  .openapi('PublicKeyCredentialRequestOptionsJSON')

const RegistrationOptionsAnswer = z
  .object({ challenge_id: z.string(), options: CreationOptions })
  .openapi('PasskeyRegistrationOptions')

const LoginOptionsAnswer = z
  .object({ challenge_id: z.string(), options: RequestOptions })
  .openapi('PasskeyLoginOptions')

const PasskeyName = z.string().trim().min(1).max(64).openapi({ example: 'iPhone' })

export const PasskeySchema = z
  .object({
    id: z.number().int().openapi({ example: 1 }),
    name: z.string().openapi({ example: 'iPhone' }),
    created_at: Timestamp,
    last_used_at: Timestamp.nullable(),
    backed_up: z
      .boolean()
      .openapi({ description: 'The authenticator syncs it (iCloud Keychain, Google Password Manager…)' }),
    transports: z.array(z.enum(TRANSPORTS)),
  })
  .openapi('Passkey')

export type PasskeyView = z.infer<typeof PasskeySchema>

const PasskeyList = z.object({ results: z.array(PasskeySchema) }).openapi('PasskeyList')

export const registerOptions = createRoute({
  method: 'post',
  path: '/passkeys/register/options',
  tags: ['Passkeys'],
  summary: 'Start registering a passkey',
  description:
    'Needs a recent sign-in (`auth_time` within REAUTH_MAX_AGE; else 403 `reauthentication_required`). Pass ' +
    '`options` to navigator.credentials.create() (PublicKeyCredential.parseCreationOptionsFromJSON) and send the ' +
    'result with `challenge_id` to POST /auth/passkeys/register within 5 minutes.',
  middleware: [atPrimary, requireUser(), requireRecentSignIn()] as const,
  security: [{ Bearer: [] }],
  responses: {
    200: json(RegistrationOptionsAnswer, 'A single-use challenge and the creation options'),
    ...problems(401, 403, 409, 429, 503),
  },
})

export const register = createRoute({
  method: 'post',
  path: '/passkeys/register',
  tags: ['Passkeys'],
  summary: 'Register a passkey',
  description:
    "The credential navigator.credentials.create() made for the options' challenge (single use, 5 minutes, issued " +
    'to you for registration). A check that fails is 400 `passkey_rejected` naming it (challenge, origin, RP id, ' +
    'user presence, algorithm…); a credential registered already: 409 `passkey_exists`. The owner is told by email.',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: {
    body: jsonBody(
      z
        .object({ challenge_id: ChallengeId, response: RegistrationResponse, name: PasskeyName.optional() })
        .openapi('PasskeyRegistration'),
    ),
  },
  responses: {
    201: json(PasskeySchema, 'The new passkey'),
    ...problems(400, 401, 409, 413, 415, 429, 503),
  },
})

export const loginOptions = createRoute({
  method: 'post',
  path: '/passkeys/login/options',
  tags: ['Passkeys'],
  summary: 'Start signing in with a passkey',
  description:
    '`{}` for usernameless sign-in (the passkey picker, or autofill with `mediation: "conditional"`), or ' +
    '`{username}` (username or email) to list that account’s passkeys in `allowCredentials`. The answer has the ' +
    'same shape and costs the same whether or not the account exists. Pass `options` to ' +
    'navigator.credentials.get() and send the result to POST /auth/passkeys/login within 5 minutes.',
  middleware: [atPrimary, limitByClientIp('passkey-options')] as const,
  request: {
    body: {
      required: false,
      content: {
        'application/json': {
          schema: z
            .object({
              username: z.string().min(1).max(254).optional().openapi({ description: 'Username or email address' }),
            })
            .openapi('PasskeyLoginOptionsInput'),
        },
      },
    },
  },
  responses: {
    200: json(LoginOptionsAnswer, 'A single-use challenge and the request options'),
    ...problems(400, 413, 415, 429, 503),
  },
})

export const login = createRoute({
  method: 'post',
  path: '/passkeys/login',
  tags: ['Passkeys'],
  summary: 'Sign in with a passkey',
  description:
    'The answer of POST /auth/token (the token pair, or cookies with `?mode=cookie`). Any failed check (challenge ' +
    'unknown, used, expired or not for sign-in; origin; RP id; user presence; signature; counter; unknown ' +
    'passkey) is the same 401 `invalid_credentials`. An assertion with user verification (UV) counts as both ' +
    'factors; without it, an account with two-factor sign-in answers 401 `mfa_required` as the password step does.',
  middleware: [atPrimary, limitByClientIp('passkey-login')] as const,
  request: { query: CookieModeQuery, body: jsonBody(PasskeyAssertionInput) },
  responses: {
    200: json(SignedInSchema, 'Signed in: the token pair, or in cookie mode the cookies'),
    ...problems(400, 401, 403, 413, 415, 429, 503),
  },
})

export const list = createRoute({
  method: 'get',
  path: '/passkeys',
  tags: ['Passkeys'],
  summary: 'List your passkeys',
  description: 'Oldest first.',
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  responses: { 200: json(PasskeyList, 'Your passkeys'), ...problems(401, 503) },
})

const PasskeyParams = idParams('1')

export const rename = createRoute({
  method: 'patch',
  path: '/passkeys/{id}',
  tags: ['Passkeys'],
  summary: 'Rename a passkey',
  description: "1–64 characters. Another user's passkey and an unknown id are the same 404.",
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: {
    params: PasskeyParams,
    body: jsonBody(z.object({ name: PasskeyName }).openapi('PasskeyRename')),
  },
  responses: { 200: json(PasskeySchema, 'The renamed passkey'), ...problems(400, 401, 404, 413, 415, 429, 503) },
})

export const remove = createRoute({
  method: 'delete',
  path: '/passkeys/{id}',
  tags: ['Passkeys'],
  summary: 'Remove a passkey',
  description:
    'The account’s last way to sign in (no password, no linked provider, no other passkey) cannot be removed: ' +
    "409 `conflict`. Another user's passkey: 404. The owner is told by email.",
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { params: PasskeyParams },
  responses: { 204: { description: 'Removed' }, ...problems(401, 404, 409, 429, 503) },
})
