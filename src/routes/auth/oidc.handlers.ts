import type { Config } from '../../config'
import type { Db } from '../../db/client'
import {
  NO_PASSWORD,
  findUserByIdentity,
  identityOwner,
  linkIdentity,
  providersOf,
  unlinkIdentity,
} from '../../db/external-identities'
import type { UserRow } from '../../db/schema'
import { findUserByLogin, insertUser, signUpChecks, toConflict, userIdByEmail } from '../../db/users'
import { assertCookieModeOrigin, wantsCookies } from '../../http/cookie-mode'
import { providerKeySet } from '../../http/provider-keys'
import { ApiError, notFound, userGone } from '../../lib/api-error'
import { idTokenInvalid, verifyIdToken } from '../../lib/oidc'
import type { ProviderIdentity } from '../../lib/oidc'
import { usernameFromEmail } from '../../lib/usernames'
import { createRouter } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import * as routes from './oidc.routes'
import { mfaRequired, signIn } from './sign-in'

/** Attempts at a free username before giving up (each loses only to a concurrent sign-up). */
const USERNAME_ATTEMPTS = 3

export const providerSignIn: AppRouteHandler<typeof routes.signIn> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const { id_token: idToken, nonce } = c.req.valid('json')
  const now = new Date()
  const identity = await verify(config, c.req.valid('param').provider, idToken, nonce, now)
  const user =
    (await findUserByIdentity(db, identity.provider, identity.sub)) ?? (await createAccount(db, identity, now))
  // With a second factor this step ends as the password step does: an MFA token, no session.
  if (user.mfaEnabled) throw await mfaRequired(user.id, tokenKeys, now)
  // The same answer as POST /auth/token, whether the account was found, linked or just created.
  return c.json(await signIn(c, user.id, now), 200)
}

export const link: AppRouteHandler<typeof routes.link, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const { id_token: idToken, nonce } = c.req.valid('json')
  const now = new Date()
  const identity = await verify(config, c.req.valid('param').provider, idToken, nonce, now)
  const { userId } = auth
  const [owner, linked] = await db.batch([identityOwner(db, identity.provider, identity.sub), providersOf(db, userId)])
  const ownerId = owner[0]?.userId
  if (ownerId === userId) return c.body(null, 204)
  if (ownerId !== undefined)
    throw new ApiError(409, 'conflict', `This ${identity.provider} account is linked to another account.`)
  if (linked.some((row) => row.provider === identity.provider)) {
    throw new ApiError(
      409,
      'conflict',
      `Another ${identity.provider} account is linked to this account: unlink it first.`,
    )
  }
  // A deleted account (the foreign key fails) or a concurrent link (the key is taken) is a conflict.
  await db.batch([linkIdentity(db, identity, userId, now)]).catch(toConflictOrGone)
  return c.body(null, 204)
}

export const unlink: AppRouteHandler<typeof routes.unlink, AuthedEnv> = async (c) => {
  const { db, auth } = c.var
  const { provider } = c.req.valid('param')
  const { userId } = auth
  // The delete checks the last-way rule itself; the rows read alongside say why nothing went.
  const [linked, removed] = await db.batch([providersOf(db, userId), unlinkIdentity(db, userId, provider)])
  if (removed.length > 0) return c.body(null, 204)
  if (!linked.some((row) => row.provider === provider)) throw notFound('linked provider')
  throw new ApiError(409, 'conflict', 'The account’s last way to sign in cannot be removed.')
}

/** The identity an ID token of a configured provider proves; an unknown provider is refused as a bad token. */
function verify(
  config: Config,
  name: string,
  idToken: string,
  nonce: string | undefined,
  now: Date,
): Promise<ProviderIdentity> {
  const provider = config.oidcProviders.get(name)
  if (provider === undefined) throw idTokenInvalid()
  return verifyIdToken(idToken, provider, (fresh) => providerKeySet(provider.jwksUri, fresh, now), {
    nonce,
    leewaySeconds: config.tokens.leewaySeconds,
    now,
  })
}

/**
 * The account for a new identity. An account that already has the token's address is linked
 * automatically only when both the provider vouches for the address (`email_verified`) and the
 * account's own address is verified; otherwise 409 `account_exists` and nothing is linked (its
 * owner signs in and links). Else a new account: a username derived from the address and made
 * unique, the address verified when the provider says so, no password (docs/design.md § Native
 * sign-in (OIDC)).
 */
async function createAccount(db: Db, identity: ProviderIdentity, now: Date): Promise<UserRow> {
  const { email } = identity
  if (email === undefined)
    throw new ApiError(403, 'forbidden', 'A new account needs the email address the provider shares.')
  const base = usernameFromEmail(email)
  for (let attempt = 0; attempt < USERNAME_ATTEMPTS; attempt += 1) {
    const candidates = [
      ...(attempt === 0 ? [base] : []),
      ...Array.from({ length: 4 }, () => `${base}${randomDigits()}`),
    ]
    const { emailTaken, username } = await signUpChecks(db, email, candidates)
    if (emailTaken) {
      const existing = await findUserByLogin(db, email)
      if (existing !== undefined) return linkExisting(db, identity, existing, now)
      continue
    }
    if (username === undefined) continue
    try {
      const [inserted] = await db
        .batch([
          insertUser(db, { username, email, passwordHash: NO_PASSWORD, emailVerified: identity.emailVerified }, now),
          linkIdentity(db, identity, userIdByEmail(email), now),
        ])
        .catch(toConflict)
      return (inserted as UserRow[])[0]!
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      if (error.code === 'email_taken') throw accountExists(identity.provider)
      if (error.code === 'username_taken') continue
      // The identity was linked meanwhile (the same sign-in, sent twice at once): sign in to it.
      const raced = await findUserByIdentity(db, identity.provider, identity.sub)
      if (raced !== undefined) return raced
      throw error
    }
  }
  throw new ApiError(409, 'conflict', 'No free username was found; try again.')
}

/** Links the identity to the account that has its address, when both sides have verified it. */
async function linkExisting(db: Db, identity: ProviderIdentity, user: UserRow, now: Date): Promise<UserRow> {
  if (!identity.emailVerified || !user.emailVerified) throw accountExists(identity.provider)
  // One identity per provider per account: another account at this provider is not linked silently.
  const linked = await providersOf(db, user.id)
  if (linked.some((row) => row.provider === identity.provider)) throw accountExists(identity.provider)
  await db.batch([linkIdentity(db, identity, user.id, now)]).catch(toConflictOrGone)
  return user
}

function accountExists(provider: string): ApiError {
  return new ApiError(409, 'account_exists', `An account has this email address: sign in to it, then link ${provider}.`)
}

function randomDigits(): string {
  return String(crypto.getRandomValues(new Uint32Array(1))[0]! % 10_000).padStart(4, '0')
}

function toConflictOrGone(error: unknown): never {
  const messages: string[] = []
  for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) messages.push(cause.message)
  if (messages.some((message) => /FOREIGN KEY constraint failed/.test(message))) throw userGone()
  return toConflict(error)
}

export const oidcRouter = createRouter()
  .openapi(routes.signIn, providerSignIn)
  .openapi(routes.link, link)
  .openapi(routes.unlink, unlink)
