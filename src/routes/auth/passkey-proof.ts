import type { z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { isGuardFailure } from '../../db/guards'
import { passkeyByCredentialId, recordPasskeyUse, takeChallenge } from '../../db/passkeys'
import type { PasskeyChallengePurpose, PasskeyChallengeRow } from '../../db/schema'
import { ApiError } from '../../lib/api-error'
import { fromBase64Url } from '../../lib/encoding'
import { PasskeyRejected, verifyAssertion } from '../../lib/webauthn'
import type { PasskeyCheck, VerifiedAssertion } from '../../lib/webauthn'
import type { AppEnv } from '../../router'
import type { AuthenticationResponse } from './passkeys.routes'

// Proving a passkey assertion, for what signs in with one: POST /auth/passkeys/login and the
// step-up of POST /auth/reauthenticate. As second-factor.ts for codes and provider-identity.ts
// for ID tokens, the proof here, the sign-in it allows with its caller.

/** A passkey assertion that checked out: whose it is, and the statements that record its use. */
export interface ProvenPasskey {
  userId: number
  mfaEnabled: boolean
  assertion: VerifiedAssertion
  /** The counter's compare-and-set and its guard: batch them with what the sign-in writes. */
  use: ReturnType<typeof recordPasskeyUse>
}

/**
 * Checks an assertion for a login challenge (§ 7.2, src/lib/webauthn.ts): one round trip takes
 * the challenge and reads the passkey. Every failure is the same 401 `invalid_credentials`; the
 * cause goes to the log only. `forUser`: the step-up of a signed-in user, whose passkey it must be.
 */
export async function provePasskey<E extends AppEnv>(
  c: Context<E>,
  input: { challenge_id: string; response: z.infer<typeof AuthenticationResponse> },
  now: Date,
  forUser?: number,
): Promise<ProvenPasskey> {
  const db = c.get('db')
  const { response } = input
  const [taken, found] = await db.batch([
    takeChallenge(db, input.challenge_id),
    passkeyByCredentialId(db, unpadded(response.rawId)),
  ])
  const row = found[0]
  const challenge = taken[0]
  const expected = liveChallenge(challenge, 'login', now)
  const owner = row?.passkey.userId
  if (expected === null) throw signInRefused('challenge')
  if (row === undefined || owner === undefined || unpadded(response.id) !== unpadded(response.rawId)) {
    throw signInRefused('credential')
  }
  if ((challenge?.userId != null && challenge.userId !== owner) || (forUser !== undefined && forUser !== owner)) {
    throw signInRefused('credential')
  }
  const clientDataJSON = fromBase64Url(response.response.clientDataJSON)
  const authenticatorData = fromBase64Url(response.response.authenticatorData)
  const signature = fromBase64Url(response.response.signature)
  if (clientDataJSON === null || authenticatorData === null || signature === null) throw signInRefused('client_data')
  const stored = {
    publicKey: JSON.parse(row.passkey.publicKey) as JsonWebKey,
    algorithm: row.passkey.algorithm,
    signCount: row.passkey.signCount,
    userHandle: row.handle,
  }
  const userHandle = response.response.userHandle ?? null
  const assertion = await verifyAssertion(
    c.get('config').webauthn,
    expected,
    stored,
    {
      clientDataJSON,
      authenticatorData,
      signature,
      userHandle: userHandle === null ? null : unpadded(userHandle),
    },
    { requireUserHandle: challenge?.userId == null && forUser === undefined },
  ).catch((err: unknown) => {
    throw err instanceof PasskeyRejected ? signInRefused(err.check) : err
  })
  const use = recordPasskeyUse(
    db,
    {
      id: row.passkey.id,
      checkedCount: row.passkey.signCount,
      signCount: assertion.signCount,
      backedUp: assertion.backedUp,
    },
    now,
  )
  return { userId: owner, mfaEnabled: row.mfaEnabled, assertion, use }
}

/**
 * Runs `work`, whose batch carries a ProvenPasskey's `use`: when its guard fails, a concurrent
 * sign-in moved the counter first (the same assertion twice, or a cloned authenticator), and this
 * one is refused.
 */
export async function withCounterChecked<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (isGuardFailure(err)) throw signInRefused('counter')
    throw err
  }
}

/** base64url as stored and compared: without the padding some clients add. */
export function unpadded(base64Url: string): string {
  return base64Url.replace(/=+$/, '')
}

/** The challenge's bytes, if it is for `purpose` and unexpired; null otherwise. */
export function liveChallenge(
  challenge: PasskeyChallengeRow | undefined,
  purpose: PasskeyChallengePurpose,
  now: Date,
): Uint8Array | null {
  if (challenge === undefined || challenge.purpose !== purpose || challenge.expiresAt <= now) return null
  return fromBase64Url(challenge.challenge)
}

function signInRefused(check: PasskeyCheck): ApiError {
  // The cause is for operators only: every failure answers the same.
  console.log(JSON.stringify({ level: 'info', message: 'passkey sign-in refused', check }))
  return new ApiError(401, 'invalid_credentials', 'The passkey could not be verified.')
}
