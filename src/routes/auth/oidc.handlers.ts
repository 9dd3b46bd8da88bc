import type { Db } from '../../db/client'
import { isForeignKeyViolation } from '../../db/constraint-errors'
import {
  findUserByIdentity,
  identityOwner,
  linkIdentity,
  providersOf,
  unlinkIdentity,
  userOfIdentity,
} from '../../db/external-identities'
import { NO_PASSWORD } from '../../db/ways-in'
import type { UserRow } from '../../db/schema'
import { findUserByLogin, insertUser, signUpChecks, toConflict, userIdByEmail, userRow } from '../../db/users'
import { securityEventMessage } from '../../email/messages'
import { assertCookieModeOrigin, wantsCookies } from '../../http/cookie-mode'
import { ApiError, notFound, userGone } from '../../lib/api-error'
import type { ProviderIdentity } from '../../lib/oidc'
import { usernameFromEmail } from '../../lib/usernames'
import { createRouter, mailerOf } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import * as routes from './oidc.routes'
import { assertFirstUse, verifyProviderToken, withIdTokenSpent } from './provider-identity'
import { mfaRequired, signIn } from './sign-in'

/** Attempts at a free username before giving up (each loses only to a concurrent sign-up). */
const USERNAME_ATTEMPTS = 3

export const providerSignIn: AppRouteHandler<typeof routes.signIn> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const { id_token: idToken, nonce } = c.req.valid('json')
  const now = new Date()
  const token = { provider: c.req.valid('param').provider, idToken, nonce }
  const { identity, spent, spend } = await verifyProviderToken(db, config, token, now)
  // A replay is refused in the round trip of the lookup; the token is spent in the batch that
  // starts the session (or alone, before an MFA token), so a failure leaves it usable for a retry.
  const [used, found] = await db.batch([spent, userOfIdentity(db, identity.provider, identity.sub)])
  assertFirstUse(used)
  const user = found[0]?.user ?? (await createAccount(db, identity, now))
  // With a second factor this step ends as the password step does: an MFA token, no session.
  if (user.mfaEnabled) {
    await withIdTokenSpent(() => db.batch([spend]))
    throw await mfaRequired(user.id, tokenKeys, now)
  }
  // The same answer as POST /auth/token, whether the account was found, linked or just created.
  return c.json(await withIdTokenSpent(() => signIn(c, user.id, now, { alongside: [spend] })), 200)
}

export const link: AppRouteHandler<typeof routes.link, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const { id_token: idToken, nonce } = c.req.valid('json')
  const now = new Date()
  const token = { provider: c.req.valid('param').provider, idToken, nonce }
  const { identity, spent, spend } = await verifyProviderToken(db, config, token, now)
  const { userId } = auth
  const [used, owner, linked, account] = await db.batch([
    spent,
    identityOwner(db, identity.provider, identity.sub),
    providersOf(db, userId),
    userRow(db, userId),
  ])
  assertFirstUse(used)
  const user = account[0]
  if (user === undefined) throw userGone()
  const ownerId = owner[0]?.userId
  if (ownerId === userId) {
    await withIdTokenSpent(() => db.batch([spend]))
    return c.body(null, 204)
  }
  if (ownerId !== undefined)
    throw new ApiError(409, 'conflict', `This ${identity.provider} account is linked to another account.`)
  if (linked.some((row) => row.provider === identity.provider)) throw anotherAtProvider(identity.provider)
  // Linked while the address is unverified, it goes again when the mailbox's owner resets the
  // password (docs/design.md § Account squatting). The owner hears of every new way in.
  const notice = securityEventMessage(user.email, user.username, 'provider_linked', identity.provider)
  const [inserted] = await withIdTokenSpent(() =>
    db.batch([
      linkIdentity(db, identity, { userId, addedWhileUnverified: !user.emailVerified }, now),
      spend,
      mailer.queue(db, notice, now),
    ]),
  ).catch(toConflictOrGone)
  // The conditional insert lost to a concurrent link of this provider.
  if (inserted.length === 0) throw anotherAtProvider(identity.provider)
  await mailer.deliverSoon()
  return c.body(null, 204)
}

export const unlink: AppRouteHandler<typeof routes.unlink, AuthedEnv> = async (c) => {
  const { db, auth } = c.var
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const { provider } = c.req.valid('param')
  const { userId } = auth
  // The delete checks the last-way rule itself; the rows read alongside say why nothing went.
  const [linked, removed, account] = await db.batch([
    providersOf(db, userId),
    unlinkIdentity(db, userId, provider),
    userRow(db, userId),
  ])
  const user = account[0]
  if (user === undefined) throw userGone()
  if (removed.length > 0) {
    const notice = securityEventMessage(user.email, user.username, 'provider_unlinked', provider)
    await db.batch([mailer.queue(db, notice, new Date())])
    await mailer.deliverSoon()
    return c.body(null, 204)
  }
  if (!linked.some((row) => row.provider === provider)) throw notFound('linked provider')
  throw new ApiError(409, 'conflict', 'The account’s last way to sign in cannot be removed.')
}

function anotherAtProvider(provider: string): ApiError {
  return new ApiError(409, 'conflict', `Another ${provider} account is linked to this account: unlink it first.`)
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
          // An account the provider did not vouch for is an unverified account, and its identity
          // counts as added while unverified (a reset by the mailbox's owner removes it).
          linkIdentity(
            db,
            identity,
            { userId: userIdByEmail(email), addedWhileUnverified: !identity.emailVerified },
            now,
          ),
        ])
        .catch(toConflict)
      return (inserted as UserRow[])[0]!
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      // The identity was linked meanwhile (the same sign-in, sent twice at once): sign in to it
      // (with one ID token, only one of them then lands its session).
      const raced = await findUserByIdentity(db, identity.provider, identity.sub)
      if (raced !== undefined) return raced
      if (error.code === 'email_taken') throw accountExists(identity.provider)
      if (error.code === 'username_taken') continue
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
  const [inserted] = await db
    .batch([linkIdentity(db, identity, { userId: user.id, addedWhileUnverified: false }, now)])
    .catch(toConflictOrGone)
  if (inserted.length === 0) throw accountExists(identity.provider)
  return user
}

function accountExists(provider: string): ApiError {
  return new ApiError(409, 'account_exists', `An account has this email address: sign in to it, then link ${provider}.`)
}

function randomDigits(): string {
  return String(crypto.getRandomValues(new Uint32Array(1))[0]! % 10_000).padStart(4, '0')
}

function toConflictOrGone(error: unknown): never {
  if (isForeignKeyViolation(error)) throw userGone()
  return toConflict(error)
}

export const oidcRouter = createRouter()
  .openapi(routes.signIn, providerSignIn)
  .openapi(routes.link, link)
  .openapi(routes.unlink, unlink)
