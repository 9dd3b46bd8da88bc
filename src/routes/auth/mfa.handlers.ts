import type { Db } from '../../db/client'
import {
  challengeAttemptReservation,
  codeAttemptReservation,
  confirmFactor,
  factorRow,
  findUserWithFactor,
  recordFactorProvenance,
  removeFactor,
  replaceRecoveryCodes,
  savePendingFactor,
  setMfaEnabled,
  spendChallenge,
} from '../../db/mfa'
import type { UserRow } from '../../db/schema'
import { loadAuthenticatedUser, userRow } from '../../db/users'
import { securityEventMessage } from '../../email/messages'
import type { SecurityEvent } from '../../email/messages'
import type { Mailer } from '../../email/mailer'
import { NO_STORE } from '../../http/conditional-get'
import { assertCookieModeOrigin, wantsCookies } from '../../http/cookie-mode'
import { ApiError, userGone } from '../../lib/api-error'
import { parseId } from '../../lib/ids'
import { hashRecoveryCode, newRecoveryCodes } from '../../lib/recovery-codes'
import { seal } from '../../lib/secret-box'
import { newTotpSecret, otpauthUri } from '../../lib/totp'
import { verifyToken } from '../../lib/tokens'
import { limitByUser } from '../../middleware/rate-limit'
import { createRouter, mailerOf, sessionDeps } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import { endSessions } from '../../sessions/end'
import { assertAccountPassword } from '../account-password'
import * as routes from './mfa.routes'
import {
  confirmedUserFactor,
  proveSecondFactor,
  refuseLocked,
  sealingKey,
  withRecoveryCodeSpent,
} from './second-factor'
import type { SecondFactorProof } from './second-factor'
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
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const { user, factor } = await findUserWithFactor(db, auth.userId)
  if (user === undefined) throw userGone()
  if (factor === undefined || factor.confirmedAt !== null) {
    throw new ApiError(409, 'conflict', 'There is no enrolment to confirm: POST /api/v1/auth/mfa/totp first.')
  }
  const now = new Date()
  const proven = await proveSecondFactor(db, config, factor, { code: c.req.valid('json').code }, now, { pending: true })
  const codes = newRecoveryCodes()
  const hashes = await Promise.all(codes.map(hashRecoveryCode))
  // A new way in: every other session ends, as when the factor goes (whoever had the password
  // alone is signed out), and the factor remembers whether the address was verified.
  await endSessions(sessionDeps(c), user.id, { allBut: auth.sessionId }, 'two-factor sign-in turned on', now, {
    commit: (revokeRows) =>
      db.batch([
        ...revokeRows(user.id),
        ...proven,
        confirmFactor(db, user.id, now),
        setMfaEnabled(db, user.id, true, now),
        recordFactorProvenance(db, user.id, !user.emailVerified),
        ...replaceRecoveryCodes(db, user.id, hashes, now),
        securityEmail(db, mailer, user, 'mfa_enabled', now),
      ]),
  })
  await mailer.deliverSoon()
  c.header('Cache-Control', NO_STORE)
  return c.json({ recovery_codes: codes }, 200)
}

export const disable: AppRouteHandler<typeof routes.disable, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const input = c.req.valid('json')
  const { user, factor } = await confirmedUserFactor(db, auth.userId)
  await assertAccountPassword(user, input.password, config)
  const now = new Date()
  const proven = await proveSecondFactor(db, config, factor, proofOf(input), now)
  // Whoever may have had the second factor's help is signed out; the caller stays. Their access
  // tokens are revoked first; the factor goes in the same batch as the rows (and the recovery
  // code's spend: a failed batch leaves the code usable for the retry).
  await withRecoveryCodeSpent(() =>
    endSessions(sessionDeps(c), user.id, { allBut: auth.sessionId }, 'two-factor sign-in turned off', now, {
      commit: (revokeRows) =>
        db.batch([
          ...revokeRows(user.id),
          ...proven,
          setMfaEnabled(db, user.id, false, now),
          ...removeFactor(db, user.id),
          securityEmail(db, mailer, user, 'mfa_disabled', now),
        ]),
    }),
  )
  await mailer.deliverSoon()
  return c.body(null, 204)
}

export const regenerateRecoveryCodes: AppRouteHandler<typeof routes.regenerateRecoveryCodes, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const { user, factor } = await confirmedUserFactor(db, auth.userId)
  const now = new Date()
  const proven = await proveSecondFactor(db, config, factor, { code: c.req.valid('json').code }, now)
  const codes = newRecoveryCodes()
  const hashes = await Promise.all(codes.map(hashRecoveryCode))
  await db.batch([
    securityEmail(db, mailer, user, 'recovery_codes_regenerated', now),
    ...proven,
    ...replaceRecoveryCodes(db, user.id, hashes, now),
  ])
  await mailer.deliverSoon()
  c.header('Cache-Control', NO_STORE)
  return c.json({ recovery_codes: codes }, 200)
}

export const verify: AppRouteHandler<typeof routes.verify> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const input = c.req.valid('json')
  const now = new Date()
  const claims = await verifyToken(input.mfa_token, 'mfa', tokenKeys, now)
  const userId = parseId(claims.sub)
  if (userId === null) throw mfaTokenRefused()
  await limitByUser(c, 'mfa-verify', userId)
  const proof = proofOf(input)
  // Before a recovery code is spent: it must not be used up by a sign-in whose notice cannot go out.
  const mailer = mailerOf(c)
  if ('recoveryCode' in proof) mailer.assertCanSend()
  // One round trip: the account, its factor, and the attempt counted against both the account (so
  // a burst meets the lock) and this MFA token (a few codes, one sign-in), before any code is looked at.
  const challenge = { jti: claims.jti, userId, expiresAt: new Date(claims.exp * 1000) }
  const [users, factors, accountAttempt, tokenAttempt] = await db.batch([
    userRow(db, userId),
    factorRow(db, userId),
    codeAttemptReservation(db, userId, now),
    challengeAttemptReservation(db, challenge),
  ])
  const [user, factor] = [users[0], factors[0]]
  if (user === undefined || factor?.confirmedAt == null || endedSince(user, claims.iat)) throw mfaTokenRefused()
  if (accountAttempt.length === 0) await refuseLocked(db, userId, now)
  if (tokenAttempt.length === 0)
    throw new ApiError(401, 'token_invalid', 'This MFA token has been used up. Log in again.')
  const proven = await proveSecondFactor(db, config, factor, proof, now, { reserved: true })
  // The session starts in one batch with the MFA token's and the recovery code's spends.
  const alongside = [...proven, spendChallenge(db, claims.jti, now)]
  if ('recoveryCode' in proof) alongside.push(securityEmail(db, mailer, user, 'recovery_code_used', now))
  const answer = await withRecoveryCodeSpent(() => signIn(c, user.id, now, { alongside }))
  if ('recoveryCode' in proof) await mailer.deliverSoon()
  return c.json(answer, 200)
}

function mfaTokenRefused(): ApiError {
  return new ApiError(401, 'token_invalid', 'The MFA token names no account with a second factor. Log in again.')
}

/** The MFA token predates the last time every session of the user ended (logout-all, a new password). */
function endedSince(user: UserRow, issuedAtSeconds: number): boolean {
  return user.allSessionsEndedAt !== null && issuedAtSeconds * 1000 < user.allSessionsEndedAt.getTime()
}

function proofOf(input: { code?: string | undefined; recovery_code?: string | undefined }): SecondFactorProof {
  return input.code !== undefined ? { code: input.code } : { recoveryCode: input.recovery_code ?? '' }
}

function securityEmail(db: Db, mailer: Mailer, user: UserRow, event: SecurityEvent, now: Date) {
  return mailer.queue(db, securityEventMessage(user.email, user.username, event), now)
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
