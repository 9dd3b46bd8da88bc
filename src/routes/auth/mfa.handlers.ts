import type { Config } from '../../config'
import type { Db } from '../../db/client'
import {
  acceptStep,
  findFactor,
  findUserWithFactor,
  lockedForSeconds,
  recordWrongCode,
  removeFactor,
  replaceRecoveryCodes,
  savePendingFactor,
  setMfaEnabled,
  spendRecoveryCode,
} from '../../db/mfa'
import type { MfaFactorRow, UserRow } from '../../db/schema'
import { loadAuthenticatedUser } from '../../db/users'
import { deliverSoon } from '../../email/account-emails'
import { securityEventMessage } from '../../email/messages'
import type { SecurityEvent } from '../../email/messages'
import { queueEmail } from '../../email/queue'
import { assertMailConfigured } from '../../email/transports'
import { NO_STORE } from '../../http/conditional-get'
import { assertCookieModeOrigin, wantsCookies } from '../../http/cookie-mode'
import { ApiError } from '../../lib/api-error'
import { parseId } from '../../lib/ids'
import { verifyPassword } from '../../lib/passwords'
import { hashRecoveryCode, newRecoveryCodes, normalizeRecoveryCode } from '../../lib/recovery-codes'
import { open, seal, secretBoxKey } from '../../lib/secret-box'
import { matchingStep, newTotpSecret, otpauthUri } from '../../lib/totp'
import { verifyToken } from '../../lib/tokens'
import { createRouter, executionContextOf, sessionDeps } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import { endSessions } from '../../sessions/end'
import * as routes from './mfa.routes'
import { signIn } from './sign-in'

const ISSUER = 'edgepress'

export const enroll: AppRouteHandler<typeof routes.enroll, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const user = await loadAuthenticatedUser(db, auth.userId)
  if (user.mfaEnabled) throw alreadyOn()
  const secret = newTotpSecret()
  const sealed = await seal(secret, await sealingKey(config), String(user.id))
  if (!(await savePendingFactor(db, user.id, sealed, new Date()))) throw alreadyOn()
  c.header('Cache-Control', NO_STORE)
  return c.json({ secret, otpauth_uri: otpauthUri(secret, user.username, ISSUER) }, 200)
}

export const confirm: AppRouteHandler<typeof routes.confirm, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  assertMailConfigured(config)
  const user = await loadAuthenticatedUser(db, auth.userId)
  const factor = await findFactor(db, user.id)
  if (factor === undefined || factor.confirmedAt !== null) {
    throw new ApiError(409, 'conflict', 'There is no enrolment to confirm: POST /api/v1/auth/mfa/totp first.')
  }
  const now = new Date()
  await checkCode(db, config, factor, c.req.valid('json').code, now, true)
  const codes = newRecoveryCodes()
  await db.batch([
    setMfaEnabled(db, user.id, true, now),
    ...replaceRecoveryCodes(db, user.id, await Promise.all(codes.map(hashRecoveryCode)), now),
    securityEmail(db, config, user, 'mfa_enabled', now),
  ])
  deliverSoon(executionContextOf(c), c.env, config)
  c.header('Cache-Control', NO_STORE)
  return c.json({ recovery_codes: codes }, 200)
}

export const disable: AppRouteHandler<typeof routes.disable, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  assertMailConfigured(config)
  const { password, code } = c.req.valid('json')
  const user = await loadAuthenticatedUser(db, auth.userId)
  if (!(await verifyPassword(password, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The password is incorrect.')
  }
  const factor = await confirmedFactorOf(db, user.id)
  const now = new Date()
  await checkCode(db, config, factor, code, now, false)
  // Whoever may have had the second factor's help is signed out; the caller stays. The factor goes
  // in the same batch as the other sessions, after their access tokens were revoked.
  await endSessions(sessionDeps(c), user.id, { allBut: auth.sessionId }, 'two-factor sign-in turned off', now, {
    commit: (revokeRows) =>
      db.batch([
        revokeRows(user.id),
        setMfaEnabled(db, user.id, false, now),
        ...removeFactor(db, user.id),
        securityEmail(db, config, user, 'mfa_disabled', now),
      ]),
  })
  deliverSoon(executionContextOf(c), c.env, config)
  return c.body(null, 204)
}

export const regenerateRecoveryCodes: AppRouteHandler<typeof routes.regenerateRecoveryCodes, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const user = await loadAuthenticatedUser(db, auth.userId)
  const factor = await confirmedFactorOf(db, user.id)
  const now = new Date()
  await checkCode(db, config, factor, c.req.valid('json').code, now, false)
  const codes = newRecoveryCodes()
  await db.batch(replaceRecoveryCodes(db, user.id, await Promise.all(codes.map(hashRecoveryCode)), now))
  c.header('Cache-Control', NO_STORE)
  return c.json({ recovery_codes: codes }, 200)
}

export const verify: AppRouteHandler<typeof routes.verify> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const { mfa_token: mfaToken, code, recovery_code: recoveryCode } = c.req.valid('json')
  const now = new Date()
  const claims = await verifyToken(mfaToken, 'mfa', tokenKeys, now)
  const userId = parseId(claims.sub)
  const { user, factor } =
    userId === null ? { user: undefined, factor: undefined } : await findUserWithFactor(db, userId)
  if (user === undefined || factor === undefined || factor.confirmedAt === null) {
    throw new ApiError(401, 'token_invalid', 'The MFA token names no account with a second factor. Log in again.')
  }
  if (code !== undefined) {
    await checkCode(db, config, factor, code, now, false)
  } else {
    await spendRecovery(db, factor, recoveryCode ?? '', now)
    assertMailConfigured(config)
    await db.batch([securityEmail(db, config, user, 'recovery_code_used', now)])
    deliverSoon(executionContextOf(c), c.env, config)
  }
  return c.json(await signIn(c, user.id, now), 200)
}

/**
 * Accepts `code` for the factor, once: locked accounts get 429 with Retry-After, wrong and replayed
 * codes 401 (and count against the account), whatever the code.
 */
async function checkCode(
  db: Db,
  config: Config,
  factor: MfaFactorRow,
  code: string,
  now: Date,
  pending: boolean,
): Promise<void> {
  refuseWhileLocked(factor, now)
  const secret = await open(factor.secretSealed, await sealingKey(config), String(factor.userId))
  if (secret === null) {
    throw new ApiError(
      500,
      'internal_error',
      'Server misconfigured: the TOTP secret cannot be opened (was MFA_ENCRYPTION_KEY changed?).',
    )
  }
  const step = matchingStep(secret, code, now)
  if (step !== null && (await acceptStep(db, factor.userId, step, now, pending))) return
  await recordWrongCode(db, factor.userId, now)
  // A code already used in its step (a replay) is refused like a wrong one.
  throw new ApiError(401, 'invalid_credentials', 'The code is incorrect or was already used.')
}

async function spendRecovery(db: Db, factor: MfaFactorRow, input: string, now: Date): Promise<void> {
  refuseWhileLocked(factor, now)
  const code = normalizeRecoveryCode(input)
  if (code !== null && (await spendRecoveryCode(db, factor.userId, await hashRecoveryCode(code), now))) return
  await recordWrongCode(db, factor.userId, now)
  throw new ApiError(401, 'invalid_credentials', 'The recovery code is incorrect or was already used.')
}

function refuseWhileLocked(factor: MfaFactorRow, now: Date): void {
  const seconds = lockedForSeconds(factor, now)
  if (seconds > 0) {
    throw new ApiError(429, 'rate_limited', `Too many wrong codes; try again in ${seconds} seconds.`, {
      headers: { 'Retry-After': String(seconds) },
    })
  }
}

async function confirmedFactorOf(db: Db, userId: number): Promise<MfaFactorRow> {
  const factor = await findFactor(db, userId)
  if (factor === undefined || factor.confirmedAt === null)
    throw new ApiError(409, 'conflict', 'Two-factor sign-in is not on.')
  return factor
}

function sealingKey(config: Config): Promise<CryptoKey> {
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

function securityEmail(db: Db, config: Config, user: UserRow, event: SecurityEvent, now: Date) {
  return queueEmail(db, config, securityEventMessage(user.email, user.username, event), now)
}

function alreadyOn(): ApiError {
  return new ApiError(409, 'conflict', 'Two-factor sign-in is already on; turn it off first to enrol a new secret.')
}

export const mfaRouter = createRouter()
  .openapi(routes.enroll, enroll)
  .openapi(routes.confirm, confirm)
  .openapi(routes.disable, disable)
  .openapi(routes.regenerateRecoveryCodes, regenerateRecoveryCodes)
  .openapi(routes.verify, verify)
