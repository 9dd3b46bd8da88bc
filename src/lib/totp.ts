// TOTP second factor (RFC 6238) as authenticator apps expect it: HMAC-SHA-1, 6 digits, 30-second
// steps. The HOTP arithmetic comes from `otpauth`; what is ours is the policy around it: which
// codes are even looked at, the drift window, and a comparison that does not say which step hit.
import { HOTP, Secret } from 'otpauth'
import { constantTimeEqual, utf8 } from './encoding'

const ALGORITHM = 'SHA1'
const DIGITS = 6
const PERIOD_SECONDS = 30
// RFC 4226 § 4 requires at least 128 bits and recommends 160, SHA-1's output size.
const SECRET_BYTES = 20
// Drift is a window of whole steps on either side; more than a few would multiply the codes a
// guess can hit, so anything larger is a caller's mistake.
const MAX_DRIFT = 5

/** A new random TOTP secret: 20 bytes from the CSPRNG, base32 (32 characters, no padding). */
export function newTotpSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(SECRET_BYTES))
  return new Secret({ buffer: bytes.buffer }).base32
}

/**
 * The `otpauth://totp/…` key URI an authenticator app reads (usually from a QR code). Issuer and
 * account are percent-encoded; an issuer may not contain ":", which separates it from the account.
 */
export function otpauthUri(secret: string, account: string, issuer: string): string {
  if (issuer.includes(':')) throw new RangeError('A TOTP issuer may not contain ":"')
  const e = encodeURIComponent
  const parameters = [
    `secret=${e(secret)}`,
    `issuer=${e(issuer)}`,
    `algorithm=${ALGORITHM}`,
    `digits=${DIGITS}`,
    `period=${PERIOD_SECONDS}`,
  ]
  // The issuer appears twice on purpose: older apps read only the label prefix, newer ones prefer
  // the parameter (Google Authenticator's Key Uri Format).
  return `otpauth://totp/${e(issuer)}:${e(account)}?${parameters.join('&')}`
}

/** The RFC 6238 time step of `now`: floor(unix seconds / 30). */
export function totpStep(now: Date): number {
  const milliseconds = now.getTime()
  if (!Number.isFinite(milliseconds)) throw new RangeError('Invalid date')
  return Math.floor(milliseconds / (PERIOD_SECONDS * 1000))
}

/**
 * The step within `drift` steps of `now` whose code is `code`, or null.
 *
 * A code stays valid for its whole step (and the drift window), so a correct code is not proof of
 * a fresh login: the caller must store the returned step and refuse any step at or below the last
 * one accepted for that user, which rejects a code seen and replayed within its window.
 * `secret` is the stored base32 secret (a malformed one throws: it is a server fault, not input).
 */
export function matchingStep(secret: string, code: string, now: Date, drift = 1): number | null {
  // Only exactly six ASCII digits are a code: "１２３４５６", " 123456" or "123456\n" never reach
  // the HMAC, so nothing about them depends on the secret.
  if (typeof code !== 'string' || !/^[0-9]{6}$/.test(code)) return null
  if (!Number.isInteger(drift) || drift < 0 || drift > MAX_DRIFT) {
    throw new RangeError(`drift must be an integer from 0 to ${MAX_DRIFT}`)
  }
  const key = Secret.fromBase32(secret)
  const presented = utf8(code)
  const current = totpStep(now)
  // Every step in the window is computed and compared, even after a match, so the time taken
  // says nothing about which step (or whether any) matched.
  let matched: number | null = null
  for (let step = current - drift; step <= current + drift; step++) {
    if (step < 0) continue // before 1970: no authenticator ever shows such a code
    const expected = HOTP.generate({ secret: key, algorithm: ALGORITHM, digits: DIGITS, counter: step })
    const equal = constantTimeEqual(presented, utf8(expected))
    if (equal && matched === null) matched = step
  }
  return matched
}
