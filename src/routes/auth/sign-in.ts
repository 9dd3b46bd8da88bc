import type { BatchItem } from 'drizzle-orm/batch'
import type { Context } from 'hono'
import { accountUnchanged, recordLogin } from '../../db/users'
import type { CheckedAccount } from '../../db/users'
import { NO_STORE } from '../../http/conditional-get'
import { setTokenCookies, wantsCookies } from '../../http/cookie-mode'
import type { CookieModeAnswer } from '../../http/cookie-mode'
import { deviceOf } from '../../http/device'
import { ApiError } from '../../lib/api-error'
import type { TokenKeys } from '../../lib/token-keys'
import { issueMfaToken } from '../../lib/tokens'
import type { TokenPair } from '../../lib/tokens'
import type { AppEnv } from '../../router'
import { sessionDeps } from '../../router'
import type { LoginSession } from '../../sessions/start'
import { startCheckedLoginSession, startLoginSession } from '../../sessions/start'

// How every /auth route that signs someone in ends (password, second factor, provider, passkey):
// one login session started the same way, and one answer.

/**
 * The body of a route that has just started or continued a login session: the token pair
 * (never cached), or in cookie mode no tokens at all, only the cookies it sets. `cookies` defaults
 * to what the request asked for (`?mode=cookie`).
 */
export async function signedInAnswer<E extends AppEnv>(
  c: Context<E>,
  session: LoginSession,
  cookies: boolean = wantsCookies(c),
): Promise<TokenPair | CookieModeAnswer> {
  if (cookies) return setTokenCookies(c, session.pair, session.sessionId, c.get('config'))
  c.header('Cache-Control', NO_STORE)
  return session.pair
}

/**
 * Starts a login session for a user who has proved who they are, recording the login (and the
 * password's upgraded hash, when it was rehashed) in the same batch, with `alongside` (an MFA
 * token spent, a security email); answers as signedInAnswer.
 */
export async function signIn<E extends AppEnv>(
  c: Context<E>,
  userId: number,
  now: Date,
  login: { upgradedHash?: string | undefined; alongside?: BatchItem<'sqlite'>[] } = {},
): Promise<TokenPair | CookieModeAnswer> {
  const alongside = [recordLogin(c.get('db'), userId, now, login.upgradedHash), ...(login.alongside ?? [])]
  const session = await startLoginSession(sessionDeps(c), { userId, device: deviceOf(c), alongside }, now)
  return signedInAnswer(c, session)
}

/**
 * signIn for an account read at a replica (password login): the session and the login record are
 * kept only if the account is still as `checked` at the primary, in the same one batch.
 * Undefined when it was not.
 */
export async function signInChecked<E extends AppEnv>(
  c: Context<E>,
  user: { id: number } & CheckedAccount,
  now: Date,
  login: { upgradedHash?: string | undefined } = {},
): Promise<TokenPair | CookieModeAnswer | undefined> {
  const checked = { passwordHash: user.passwordHash }
  const session = await startCheckedLoginSession(
    sessionDeps(c),
    {
      userId: user.id,
      device: deviceOf(c),
      accountIsUnchanged: accountUnchanged(user.id, checked),
      after: [recordLogin(c.get('db'), user.id, now, login.upgradedHash, checked)],
    },
    now,
  )
  return session === undefined ? undefined : signedInAnswer(c, session)
}

/**
 * The end of a first login step (password, provider) for an account with a second factor: 401
 * `mfa_required` with the MFA token POST /auth/mfa/verify takes. No session, no cookie.
 */
export async function mfaRequired(userId: number, keys: TokenKeys, now: Date): Promise<ApiError> {
  return new ApiError(
    401,
    'mfa_required',
    'A second factor is required: send the code with this mfa_token to POST /api/v1/auth/mfa/verify.',
    { members: { mfa_token: await issueMfaToken(String(userId), keys, now) } },
  )
}
