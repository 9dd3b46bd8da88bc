import type { Config } from '../config'
import { NO_PASSWORD } from '../db/ways-in'
import type { UserRow } from '../db/schema'
import { ApiError } from '../lib/api-error'
import { verifyPassword } from '../lib/passwords'

/**
 * Checks the password a lasting change asks for (turning the second factor off, deleting the
 * account), when the account has one: missing → 400 naming `password`, wrong → 401
 * `invalid_credentials`. An account created by a sign-in provider has none to give; a recent
 * sign-in (step-up) vouches for it instead.
 */
export async function assertAccountPassword(
  user: UserRow,
  password: string | undefined,
  config: Config,
): Promise<void> {
  if (user.passwordHash === NO_PASSWORD) return
  if (password === undefined) {
    throw new ApiError(400, 'validation_failed', 'Invalid or missing: password.', {
      errors: [{ path: 'password', message: 'is required' }],
    })
  }
  if (!(await verifyPassword(password, user.passwordHash, config.passwordPepper))) {
    throw new ApiError(401, 'invalid_credentials', 'The password is incorrect.')
  }
}
