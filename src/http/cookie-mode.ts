import type { Context } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import type { Config } from '../config'
import { forbidden } from '../lib/api-error'
import { utf8 } from '../lib/encoding'
import { derivedHmacKey, isValidMac, macOf } from '../lib/hmac'
import type { TokenPair } from '../lib/tokens'
import { NO_STORE } from './conditional-get'
import { isSafeMethod } from './request'

// Cookie mode for web apps: instead of a JSON token pair, POST /auth/token?mode=cookie sets the
// tokens as __Host- cookies (HttpOnly, Secure, Path=/, no Domain, SameSite from COOKIE_SAMESITE)
// that scripts cannot read. Every state-changing request authenticated by cookie must carry
// X-CSRF-Token: a MAC of the login session id (a signed double-submit token), handed out in the login
// body and in a readable __Host- cookie.

const COOKIE_PREFIX = '__Host-edgepress-'
export const ACCESS_COOKIE = `${COOKIE_PREFIX}access`
export const REFRESH_COOKIE = `${COOKIE_PREFIX}refresh`
export const CSRF_COOKIE = `${COOKIE_PREFIX}csrf`
export const CSRF_HEADER = 'X-CSRF-Token'

/** The body a cookie-mode login or refresh returns instead of the tokens. */
export interface CookieModeAnswer {
  token_type: 'Cookie'
  expires_in: number
  refresh_expires_in: number
  csrf_token: string
}

/** True when the client asked for cookie mode (`?mode=cookie`). */
export function wantsCookies(c: Context): boolean {
  return c.req.query('mode') === 'cookie'
}

/** The CSRF token of a login session: MAC(sid) under a key derived for this purpose only. */
async function csrfTokenFor(sessionId: string, config: Config): Promise<string> {
  return macOf(`csrf:${sessionId}`, await derivedHmacKey(config.tokens.secret, 'csrf'))
}

/**
 * Login CSRF: a page on another site can auto-submit a form (no preflight) that logs the victim's
 * browser into the attacker's account. A request that asks for cookies must come from the API's
 * own origin or a configured CORS origin, and not be marked cross-site by the browser; anything
 * else is refused with 403 before any cookie is set. Clients that send neither header (not a
 * browser) pass.
 */
export function assertCookieModeOrigin(c: Context, corsOrigins: readonly string[]): void {
  const origin = c.req.header('origin')
  const ownOrigin = new URL(c.req.url).origin
  const foreignOrigin = origin !== undefined && origin !== ownOrigin && !corsOrigins.includes(origin)
  if (foreignOrigin || c.req.header('sec-fetch-site') === 'cross-site') {
    throw forbidden('Cookie mode is only for pages of this API and of the configured CORS origins.')
  }
}

/** Sets the token pair as cookies and returns the body to send instead of the tokens. */
export async function setTokenCookies(
  c: Context,
  pair: TokenPair,
  sessionId: string,
  config: Config,
): Promise<CookieModeAnswer> {
  const csrfToken = await csrfTokenFor(sessionId, config)
  const base = { path: '/', secure: true, sameSite: config.cookieSameSite, prefix: 'host' as const }
  setCookie(c, bare(ACCESS_COOKIE), pair.access_token, { ...base, httpOnly: true, maxAge: pair.expires_in })
  setCookie(c, bare(REFRESH_COOKIE), pair.refresh_token, { ...base, httpOnly: true, maxAge: pair.refresh_expires_in })
  setCookie(c, bare(CSRF_COOKIE), csrfToken, { ...base, httpOnly: false, maxAge: pair.refresh_expires_in })
  c.header('Cache-Control', NO_STORE)
  return {
    token_type: 'Cookie',
    expires_in: pair.expires_in,
    refresh_expires_in: pair.refresh_expires_in,
    csrf_token: csrfToken,
  }
}

/** Expires the token cookies (logout). */
export function clearTokenCookies(c: Context): void {
  for (const name of [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE]) {
    deleteCookie(c, bare(name), { path: '/', secure: true, prefix: 'host' })
  }
}

/**
 * The request carries credentials: an Authorization header, or any of the token cookies (an
 * expired access cookie too).
 */
export function carriesCredentials(c: Context): boolean {
  return c.req.header('authorization') !== undefined || (c.req.header('cookie') ?? '').includes(COOKIE_PREFIX)
}

export function readAccessCookie(c: Context): string | undefined {
  return getCookie(c, bare(ACCESS_COOKIE), 'host')
}

export function readRefreshCookie(c: Context): string | undefined {
  return getCookie(c, bare(REFRESH_COOKIE), 'host')
}

/**
 * Refuses a state-changing request authenticated by cookie unless X-CSRF-Token is the login session's
 * CSRF token: a page on another site can make the browser send the cookies, but cannot read or
 * compute the token.
 */
export async function assertCsrfToken(c: Context, sessionId: string, config: Config): Promise<void> {
  if (isSafeMethod(c.req.method)) return
  const presented = c.req.header(CSRF_HEADER) ?? ''
  const key = await derivedHmacKey(config.tokens.secret, 'csrf')
  if (presented === '' || utf8(presented).length > 64 || !(await isValidMac(`csrf:${sessionId}`, presented, key))) {
    throw forbidden(`A request authenticated by cookie must send the login session's ${CSRF_HEADER} header.`)
  }
}

// hono/cookie adds the __Host- prefix itself when given `prefix: 'host'`.
function bare(name: string): string {
  return name.replace(/^__Host-/, '')
}
