import type { Context } from 'hono'
import type { UserRow } from '../../db/schema'
import { endAllSessions, endSessions, isCurrentRefreshToken, rotateRefreshToken, startSession } from '../../db/sessions'
import {
  backfillUsernameKeys,
  findUserByLogin,
  insertUser,
  recordLogin,
  toConflict,
  userIdByEmail,
} from '../../db/users'
import { accountEmailStatements, deliverSoon } from '../../email/account-emails'
import { validationFailed } from '../../errors'
import {
  assertCookieModeOrigin,
  assertCsrfToken,
  clearSessionCookies,
  readRefreshCookie,
  setSessionCookies,
  wantsCookies,
} from '../../http/cookie-session'
import { NO_STORE, PRIVATE_NO_STORE } from '../../http/conditional-get'
import { deviceOf, sightingOf } from '../../http/device'
import { ApiError } from '../../lib/api-error'
import { decoyHash, hashPassword, needsRehash, verifyPassword } from '../../lib/passwords'
import { assertSessionNotRevoked } from '../../lib/revocation'
import { issueMfaToken, verifyToken } from '../../lib/tokens'
import { limitByAccount, limitByUser } from '../../middleware/rate-limit'
import { API_PREFIX, createRouter, executionContextOf } from '../../router'
import type { AppEnv, AppRouteHandler, AuthedEnv } from '../../router'
import { toPrivateUser } from '../account-schemas'
import * as account from './account.handlers'
import * as accountRoutes from './account.routes'
import * as routes from './auth.routes'
import * as mfa from './mfa.handlers'
import * as mfaRoutes from './mfa.routes'
import * as oidc from './oidc.handlers'
import * as oidcRoutes from './oidc.routes'
import * as devices from './sessions.handlers'
import * as devicesRoutes from './sessions.routes'

export const register: AppRouteHandler<typeof routes.register> = async (c) => {
  const { username, email, password } = c.req.valid('json')
  await limitByAccount(c, 'register', email)
  const { db, config } = c.var
  const now = new Date()
  const passwordHash = await hashPassword(password, config.passwordPepper)
  // Every old row keyed first, so the unique key index sees each name the new one could shadow.
  await backfillUsernameKeys(db)
  // The account, its verification token and the email carrying it land together or not at all.
  const [inserted] = await db
    .batch([
      insertUser(db, { username, email, passwordHash }, now),
      ...(await accountEmailStatements(
        'email_verification',
        db,
        config,
        { userId: userIdByEmail(email), username, email },
        now,
      )),
    ])
    .catch(toConflict)
  const user = (inserted as UserRow[])[0]!
  deliverSoon(executionContextOf(c), c.env, config)
  c.header('Location', `${API_PREFIX}/users/${user.id}`)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(toPrivateUser(user, []), 201)
}

// /auth/login is an alias: both routes come from one factory and share this handler.
type TokenRoute = typeof routes.token

export const token: AppRouteHandler<TokenRoute> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const { username, password } = readCredentials(c, c.req.valid('json'))
  const user = await findUserByLogin(db, username)
  // Keyed on the account when it exists, so username, email and Unicode spellings share one budget.
  await (user === undefined ? limitByAccount(c, 'token', username) : limitByUser(c, 'token', user.id))
  // Unknown users are checked against a decoy hash: same PBKDF2 work, same answer, same timing.
  const matches = await verifyPassword(
    password,
    user?.passwordHash ?? decoyHash(config.passwordPepper),
    config.passwordPepper,
  )
  if (user === undefined || !matches) {
    throw new ApiError(401, 'invalid_credentials', 'The username or password is incorrect.')
  }
  const now = new Date()
  // With a second factor the password step ends here: an MFA token for POST /auth/mfa/verify,
  // which starts the session. No cookie, no token pair.
  if (user.mfaEnabled) {
    throw new ApiError(
      401,
      'mfa_required',
      'A second factor is required: send the code with this mfa_token to POST /api/v1/auth/mfa/verify.',
      {
        members: { mfa_token: await issueMfaToken(String(user.id), tokenKeys, now) },
      },
    )
  }
  const upgradedHash = needsRehash(user.passwordHash, config.passwordPepper)
    ? await hashPassword(password, config.passwordPepper)
    : undefined
  const { pair, sessionId } = await startSession(
    db,
    user.id,
    tokenKeys,
    now,
    [recordLogin(db, user.id, now, upgradedHash)],
    deviceOf(c),
  )
  if (wantsCookies(c)) return c.json(await setSessionCookies(c, pair, sessionId, config), 200)
  c.header('Cache-Control', NO_STORE)
  return c.json(pair, 200)
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
  const { db, config, tokenKeys } = c.var
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
  const pair = await rotateRefreshToken(
    db,
    c.var.kv,
    claims,
    tokenKeys,
    config.tokens.reuseGraceSeconds,
    now,
    sightingOf(c),
  )
  if (wantsCookies(c)) return c.json(await setSessionCookies(c, pair, claims.sid, config), 200)
  c.header('Cache-Control', NO_STORE)
  return c.json(pair, 200)
}

export const verify: AppRouteHandler<typeof routes.verify> = async (c) => {
  const { token: presented } = c.req.valid('json')
  const claims = await verifyToken(presented, 'any', c.var.tokenKeys, new Date())
  await assertSessionNotRevoked(c.var.kv, claims.sid, c.var.config.tokens.revocationCacheTtlSeconds)
  // A rotated refresh token is no longer valid even though its session lives on.
  if (claims.tokenType === 'refresh' && !(await isCurrentRefreshToken(c.var.db, claims, c.var.tokenKeys, new Date()))) {
    throw new ApiError(401, 'token_revoked', 'The refresh token has been rotated or revoked.')
  }
  // verifyToken('any') refuses MFA tokens: what is left is a session's access or refresh token.
  return c.json({ token_type: claims.tokenType as 'access' | 'refresh', sub: claims.sub, exp: claims.exp }, 200)
}

export const logout: AppRouteHandler<typeof routes.logout, AuthedEnv> = async (c) => {
  // Logout ends only its own session (docs/API.md, precise point 7), which includes this session's refresh token;
  // the optional body `{refresh_token}` is validated but never widens that to another session.
  const { auth, db, tokenKeys } = c.var
  const now = new Date()
  await endSessions(db, c.var.kv, [auth.sessionId], Number(auth.userId), 'logout', now, tokenKeys, auth.expiresAt)
  if (auth.viaCookie) clearSessionCookies(c)
  return c.body(null, 204)
}

export const logoutAll: AppRouteHandler<typeof routes.logoutAll, AuthedEnv> = async (c) => {
  const { auth, db, tokenKeys } = c.var
  await endAllSessions(db, c.var.kv, Number(auth.userId), 'logout-all', new Date(), tokenKeys, auth.sessionId)
  if (auth.viaCookie) clearSessionCookies(c)
  return c.body(null, 204)
}

export const authRouter = createRouter()
  .openapi(routes.register, register)
  .openapi(routes.token, token)
  .openapi(routes.login, token)
  .openapi(routes.refresh, refresh)
  .openapi(routes.verify, verify)
  .openapi(routes.logout, logout)
  .openapi(routes.logoutAll, logoutAll)
  .openapi(devicesRoutes.listSessions, devices.listSessions)
  .openapi(devicesRoutes.endSession, devices.endSession)
  .openapi(accountRoutes.passwordChange, account.passwordChange)
  .openapi(accountRoutes.passwordReset, account.passwordReset)
  .openapi(accountRoutes.passwordResetConfirm, account.passwordResetConfirm)
  .openapi(accountRoutes.emailVerify, account.emailVerify)
  .openapi(accountRoutes.emailResend, account.emailResend)
  .openapi(mfaRoutes.enroll, mfa.enroll)
  .openapi(mfaRoutes.confirm, mfa.confirm)
  .openapi(mfaRoutes.disable, mfa.disable)
  .openapi(mfaRoutes.regenerateRecoveryCodes, mfa.regenerateRecoveryCodes)
  .openapi(mfaRoutes.verify, mfa.verify)
  .openapi(oidcRoutes.signIn, oidc.signIn)
  .openapi(oidcRoutes.link, oidc.link)
  .openapi(oidcRoutes.unlink, oidc.unlink)
