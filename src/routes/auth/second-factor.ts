import type { Config } from '../../config'
import type { Db } from '../../db/client'
import type { BatchItem } from 'drizzle-orm/batch'
import { isGuardFailure } from '../../db/guards'
import {
  acceptStep,
  findFactor,
  findUserWithFactor,
  hasUnusedRecoveryCode,
  lockedForSeconds,
  recoveryCodeSpend,
  reserveCodeAttempt,
} from '../../db/mfa'
import type { MfaFactorRow, UserRow } from '../../db/schema'
import { ApiError, userGone } from '../../lib/api-error'
import { hashRecoveryCode, normalizeRecoveryCode } from '../../lib/recovery-codes'
import { open, secretBoxKey } from '../../lib/secret-box'
import { matchingStep } from '../../lib/totp'

// Checking a second factor, for every route that asks for one: the login's second step, turning
// the factor on and off, new recovery codes, and re-authentication.

/** What the user offers: a code from the authenticator app, or one of their recovery codes. */
export type SecondFactorProof = { code: string } | { recoveryCode: string }

/**
 * Checks the proof for the factor. The attempt is counted before the code is looked at
 * (reserveCodeAttempt), so a burst of parallel guesses gets no more than MFA_FAILURE_LIMIT
 * answers a window, and a locked factor refuses even the right code: 429 with Retry-After. A wrong
 * or replayed code is 401 `invalid_credentials`. A TOTP code is accepted here, once (its step is
 * spent and the wrong-code count cleared). A recovery code is only checked: the statements that
 * spend it are answered, for the caller's batch of what the code allows, so that an outage of
 * that batch leaves the code usable and of two concurrent uses one lands (recoveryCodeRefused()
 * for the other). `pending`: the enrolment's first code (TOTP only).
 */
export async function proveSecondFactor(
  db: Db,
  config: Config,
  factor: MfaFactorRow,
  proof: SecondFactorProof,
  now: Date,
  { pending = false, reserved = false }: { pending?: boolean; reserved?: boolean } = {},
): Promise<BatchItem<'sqlite'>[]> {
  // `reserved`: the caller has counted the attempt itself (in a batch with its other reads).
  if (!reserved && !(await reserveCodeAttempt(db, factor.userId, now))) await refuseLocked(db, factor.userId, now)
  if ('code' in proof) {
    const secret = await open(factor.secretSealed, await sealingKey(config), String(factor.userId))
    if (secret === null) {
      throw new ApiError(
        500,
        'internal_error',
        'Server misconfigured: the TOTP secret cannot be opened (was MFA_ENCRYPTION_KEY changed?).',
      )
    }
    const step = matchingStep(secret, proof.code, now)
    if (step !== null && (await acceptStep(db, factor.userId, step, pending))) return []
    // A code already used in its step (a replay) is refused like a wrong one.
    throw new ApiError(401, 'invalid_credentials', 'The code is incorrect or was already used.')
  }
  const code = pending ? null : normalizeRecoveryCode(proof.recoveryCode)
  const hash = code === null ? null : await hashRecoveryCode(code)
  if (hash !== null && (await hasUnusedRecoveryCode(db, factor.userId, hash))) {
    return recoveryCodeSpend(db, factor.userId, hash, now)
  }
  throw recoveryCodeRefused()
}

export function recoveryCodeRefused(): ApiError {
  return new ApiError(401, 'invalid_credentials', 'The recovery code is incorrect or was already used.')
}

/**
 * Runs `work`, whose batch carries the statements proveSecondFactor() answered: when their guard
 * fails, a concurrent request spent the recovery code first, and this one is refused as if the
 * code had been used already.
 */
export async function withRecoveryCodeSpent<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (isGuardFailure(err)) throw recoveryCodeRefused()
    throw err
  }
}

/** 429 for a factor whose attempts are used up, with Retry-After: when its window ends. */
export async function refuseLocked(db: Db, userId: number, now: Date): Promise<never> {
  const factor = await findFactor(db, userId)
  const seconds = Math.max(1, factor === undefined ? 1 : lockedForSeconds(factor, now))
  throw new ApiError(429, 'rate_limited', `Too many wrong codes; try again in ${seconds} seconds.`, {
    headers: { 'Retry-After': String(seconds) },
  })
}

/** The user and their factor, which must be on (409 otherwise), in one round trip. */
export async function confirmedUserFactor(db: Db, userId: number): Promise<{ user: UserRow; factor: MfaFactorRow }> {
  const { user, factor } = await findUserWithFactor(db, userId)
  if (user === undefined) throw userGone()
  if (factor === undefined || factor.confirmedAt === null) {
    throw new ApiError(409, 'conflict', 'Two-factor sign-in is not on.')
  }
  return { user, factor }
}

/** The key TOTP secrets are sealed under; 500 naming MFA_ENCRYPTION_KEY when it is not set. */
export function sealingKey(config: Config): Promise<CryptoKey> {
  if (config.mfaEncryptionKey === undefined) {
    throw new ApiError(
      500,
      'internal_error',
      'Server misconfigured: MFA_ENCRYPTION_KEY is not set. Set a random secret of at least 32 bytes ' +
        '(`wrangler secret put MFA_ENCRYPTION_KEY`; `npm run dev` writes one to .dev.vars).',
    )
  }
  return secretBoxKey(config.mfaEncryptionKey)
}
