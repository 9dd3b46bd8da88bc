import type { Context } from 'hono'
import { identityOwner } from '../../db/external-identities'
import { findUserByLogin, loadAuthenticatedUser } from '../../db/users'
import { securityEventMessage } from '../../email/messages'
import { validationFailed } from '../../errors'
import {
  assertCookieModeOrigin,
  assertCsrfToken,
  clearTokenCookies,
  readRefreshCookie,
  wantsCookies,
} from '../../http/cookie-mode'
import { sightingOf } from '../../http/device'
import { ApiError } from '../../lib/api-error'
import { decoyHash, hashPassword, needsRehash, verifyPassword } from '../../lib/passwords'
import { idTokenInvalid } from '../../lib/oidc'
import { verifyToken } from '../../lib/tokens'
import { limitByAccount, limitByUser } from '../../middleware/rate-limit'
import { createRouter, mailerOf, sessionDeps } from '../../router'
import type { AppEnv, AppRouteHandler, AuthedEnv } from '../../router'
import { endSessions } from '../../sessions/end'
import { assertSessionNotRevoked } from '../../sessions/revocation-keys'
import { isCurrentRefreshToken, reauthenticatedPair, rotateRefreshToken } from '../../sessions/rotate'
import { assertFirstUse, verifyProviderToken, withIdTokenSpent } from './provider-identity'
import { provePasskey, withCounterChecked } from './passkey-proof'
import { confirmedUserFactor, proveSecondFactor, withRecoveryCodeSpent } from './second-factor'
import { mfaRequired, signInChecked, signedInAnswer } from './sign-in'
import * as routes from './tokens.routes'

// /auth/login is an alias: both routes come from one factory and share this handler.
//
// One trip to the primary, whatever the answer (docs/design.md § Login). The account is read
// where the route's D1 session starts (d1ReplicaFirst): the client's bookmark, else the nearest
// replica. A success is then one batch at the primary that keeps the new session only if the
// account is still as checked (same password hash, no second factor): a replica behind a password
// change or an enrolment lets nobody in. Every other answer reads the account at the primary
// instead, which decides it, so a wrong password, an unknown user and `mfa_required` cost what a
// success costs, and a password changed a moment ago is judged by its new hash.
export const token: AppRouteHandler<typeof routes.token> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const { username, password } = readCredentials(c, c.req.valid('json'))
  const near = await findUserByLogin(db, username)
  // Keyed on the account when it exists, so username, email and Unicode spellings share one budget.
  await (near === undefined ? limitByAccount(c, 'token', username) : limitByUser(c, 'token', near.id))
  // Unknown users are checked against a decoy hash: same PBKDF2 work, same answer, same timing.
  const verify = (hash: string | undefined) =>
    verifyPassword(password, hash ?? decoyHash(config.passwordPepper), config.passwordPepper)
  const upgradeOf = async (hash: string) =>
    needsRehash(hash, config.passwordPepper) ? await hashPassword(password, config.passwordPepper) : undefined
  const nearMatches = await verify(near?.passwordHash)
  const now = new Date()
  if (near !== undefined && nearMatches && !near.mfaEnabled) {
    const answer = await signInChecked(c, near, now, { upgradedHash: await upgradeOf(near.passwordHash) })
    if (answer !== undefined) return c.json(answer, 200)
  }
  const user = await findUserByLogin(c.get('primaryDb')(), username)
  // The same hash was just checked; a second PBKDF2 only when the replica was behind.
  const matches =
    user === undefined
      ? false
      : user.passwordHash === near?.passwordHash
        ? nearMatches
        : await verify(user.passwordHash)
  if (user === undefined || !matches) {
    throw new ApiError(401, 'invalid_credentials', 'The username or password is incorrect.')
  }
  // With a second factor the password step ends here: POST /auth/mfa/verify starts the session.
  if (user.mfaEnabled) throw await mfaRequired(user.id, tokenKeys, now)
  // The replica was behind the primary (a new account, a new password): sign in from its row. A
  // change between the two reads (a concurrent reset) refuses the password that was just replaced.
  const answer = await signInChecked(c, user, now, { upgradedHash: await upgradeOf(user.passwordHash) })
  if (answer === undefined) throw new ApiError(401, 'invalid_credentials', 'The username or password is incorrect.')
  return c.json(answer, 200)
}

/** Credentials from the body, or from HTTP Basic when the body has none. */
function readCredentials(
  c: Context<AppEnv>,
  body: Partial<{ username: string; password: string }>,
): { username: string; password: string } {
  const basic = /^basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(c.req.header('authorization') ?? '')
  if (basic !== null && body.username === undefined && body.password === undefined) {
    const decoded = decodeBasic(basic[1]!)
    if (decoded !== null) return decoded
    throw new ApiError(401, 'invalid_credentials', 'The HTTP Basic credentials are malformed.')
  }
  const parsed = routes.CredentialsInput.safeParse(body)
  if (!parsed.success) throw validationFailed(parsed.error)
  return parsed.data
}

function decodeBasic(encoded: string): { username: string; password: string } | null {
  try {
    const bytes = Uint8Array.from(atob(encoded), (char) => char.charCodeAt(0))
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes)
    const colon = text.indexOf(':')
    if (colon < 1) return null
    return { username: text.slice(0, colon), password: text.slice(colon + 1) }
  } catch {
    return null
  }
}

export const refresh: AppRouteHandler<typeof routes.refresh> = async (c) => {
  const { config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const now = new Date()
  const fromBody = c.req.valid('json').refresh_token
  const fromCookie = fromBody === undefined && wantsCookies(c) ? readRefreshCookie(c) : undefined
  const presented = fromBody ?? fromCookie
  if (presented === undefined) {
    throw new ApiError(400, 'validation_failed', 'Invalid or missing: refresh_token.', {
      errors: [{ path: 'refresh_token', message: 'is required' }],
    })
  }
  const claims = await verifyToken(presented, 'refresh', tokenKeys, now)
  if (fromCookie !== undefined) await assertCsrfToken(c, claims.sid, config)
  const pair = await rotateRefreshToken(sessionDeps(c), claims, sightingOf(c), now)
  return c.json(await signedInAnswer(c, { pair, sessionId: claims.sid }), 200)
}

export const verify: AppRouteHandler<typeof routes.verify> = async (c) => {
  const { token: presented } = c.req.valid('json')
  const now = new Date()
  const claims = await verifyToken(presented, 'any', c.get('tokenKeys'), now)
  await assertSessionNotRevoked(c.get('revocations'), claims.sid, c.get('config').tokens.revocationCacheTtlSeconds)
  // A rotated refresh token is no longer valid even though its session lives on.
  if (claims.tokenType === 'refresh' && !(await isCurrentRefreshToken(sessionDeps(c), claims, now))) {
    throw new ApiError(401, 'token_revoked', 'The refresh token has been rotated or revoked.')
  }
  // verifyToken('any') refuses MFA tokens: what is left is a session's access or refresh token.
  return c.json({ token_type: claims.tokenType as 'access' | 'refresh', sub: claims.sub, exp: claims.exp }, 200)
}

export const logout: AppRouteHandler<typeof routes.logout, AuthedEnv> = async (c) => {
  // Logout ends only its own session (docs/API.md, precise point 7), which includes this session's
  // refresh token; the optional body `{refresh_token}` is validated but never widens that.
  const { auth } = c.var
  const which = { only: [auth.sessionId], tokenExpiresAt: auth.expiresAt }
  await endSessions(sessionDeps(c), auth.userId, which, 'logout', new Date())
  if (auth.viaCookie) clearTokenCookies(c)
  return c.body(null, 204)
}

export const logoutAll: AppRouteHandler<typeof routes.logoutAll, AuthedEnv> = async (c) => {
  const { auth } = c.var
  await endSessions(
    sessionDeps(c),
    auth.userId,
    { all: true, callerSid: auth.sessionId, callerTokenExpiresAt: auth.expiresAt },
    'logout-all',
    new Date(),
  )
  if (auth.viaCookie) clearTokenCookies(c)
  return c.body(null, 204)
}

export const reauthenticate: AppRouteHandler<typeof routes.reauthenticate, AuthedEnv> = async (c) => {
  const { auth, db, config } = c.var
  const input = c.req.valid('json')
  const now = new Date()
  await limitByUser(c, 'reauthenticate', auth.userId)
  if (input.code !== undefined) {
    const { user, factor } = await confirmedUserFactor(db, auth.userId)
    const proof = TOTP_CODE.test(input.code) ? { code: input.code } : { recoveryCode: input.code }
    const mailer = mailerOf(c)
    if ('recoveryCode' in proof) mailer.assertCanSend()
    const proven = await proveSecondFactor(db, config, factor, proof, now)
    const notice =
      'recoveryCode' in proof
        ? [mailer.queue(db, securityEventMessage(user.email, user.username, 'recovery_code_used'), now)]
        : []
    // The new sign-in time, the recovery code's spend and its notice land together.
    const pair = await withRecoveryCodeSpent(() =>
      reauthenticatedPair(sessionDeps(c), auth, now, { alongside: [...proven, ...notice] }),
    )
    if ('recoveryCode' in proof) await mailer.deliverSoon()
    return c.json(await signedInAnswer(c, { pair, sessionId: auth.sessionId }, auth.viaCookie), 200)
  }
  if (input.passkey !== undefined) {
    // Only a passkey of this very account vouches for it; its counter moves with the new sign-in time.
    const proven = await provePasskey(c, input.passkey, now, auth.userId)
    const pair = await withCounterChecked(() =>
      reauthenticatedPair(sessionDeps(c), auth, now, { alongside: proven.use }),
    )
    return c.json(await signedInAnswer(c, { pair, sessionId: auth.sessionId }, auth.viaCookie), 200)
  }
  if (input.password !== undefined) {
    const user = await loadAuthenticatedUser(db, auth.userId)
    if (!(await verifyPassword(input.password, user.passwordHash, config.passwordPepper))) {
      throw new ApiError(401, 'invalid_credentials', 'The password is incorrect.')
    }
    const pair = await reauthenticatedPair(sessionDeps(c), auth, now)
    return c.json(await signedInAnswer(c, { pair, sessionId: auth.sessionId }, auth.viaCookie), 200)
  }
  const token = { provider: input.provider ?? '', idToken: input.id_token ?? '', nonce: input.nonce }
  const { identity, spent, spend } = await verifyProviderToken(db, config, token, now)
  const [used, owner] = await db.batch([spent, identityOwner(db, identity.provider, identity.sub)])
  assertFirstUse(used)
  // Only an identity linked to this very account vouches for it.
  if (owner[0]?.userId !== auth.userId) throw idTokenInvalid()
  const pair = await withIdTokenSpent(() => reauthenticatedPair(sessionDeps(c), auth, now, { alongside: [spend] }))
  return c.json(await signedInAnswer(c, { pair, sessionId: auth.sessionId }, auth.viaCookie), 200)
}

const TOTP_CODE = /^[0-9]{6}$/

export const tokensRouter = createRouter()
  .openapi(routes.token, token)
  .openapi(routes.login, token)
  .openapi(routes.refresh, refresh)
  .openapi(routes.verify, verify)
  .openapi(routes.logout, logout)
  .openapi(routes.logoutAll, logoutAll)
  .openapi(routes.reauthenticate, reauthenticate)
