import { sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { Context } from 'hono'
import type { Config } from '../../config'
import type { Db } from '../../db/client'
import { isForeignKeyViolation } from '../../db/constraint-errors'
import { guardThat, isGuardFailure } from '../../db/guards'
import {
  atMostPasskeys,
  insertChallenge,
  insertPasskey,
  passkeyByCredentialId,
  passkeysOf,
  removePasskey,
  renamePasskey,
  takeChallenge,
  userHandleOf,
} from '../../db/passkeys'
import type { PasskeyChallengePurpose, PasskeyRow } from '../../db/schema'
import { loginKeyOf, userIdByLogin, userRow } from '../../db/users'
import { securityEventMessage } from '../../email/messages'
import { NO_STORE, PRIVATE_NO_STORE } from '../../http/conditional-get'
import { assertCookieModeOrigin, wantsCookies } from '../../http/cookie-mode'
import { deviceOf } from '../../http/device'
import { ApiError, notFound, userGone } from '../../lib/api-error'
import { fromBase64Url, randomToken } from '../../lib/encoding'
import { derivedHmacKey, macOf } from '../../lib/hmac'
import { parseId } from '../../lib/ids'
import { PASSKEY_ALGORITHMS, PasskeyRejected, verifyRegistration } from '../../lib/webauthn'
import type { PasskeyCheck } from '../../lib/webauthn'
import { limitByAccount, limitByUser } from '../../middleware/rate-limit'
import { createRouter, mailerOf } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import * as routes from './passkeys.routes'
import type { PasskeyView, Transport } from './passkeys.routes'
import { liveChallenge, provePasskey, unpadded, withCounterChecked } from './passkey-proof'
import { mfaRequired, signIn } from './sign-in'

/** How long a challenge of the options endpoints lives (WebAuthn's own `timeout` says the same). */
const CHALLENGE_TTL_MS = 5 * 60_000
/** Enough for every device a person has, and a bound on excludeCredentials. */
const MAX_PASSKEYS_PER_USER = 20
const KNOWN_TRANSPORTS = new Set<string>(routes.TRANSPORTS)

export const registerOptions: AppRouteHandler<typeof routes.registerOptions, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  // Each answer stores a challenge: a signed-in user cannot fill the table between two prunes.
  await limitByUser(c, 'passkey-register', auth.userId)
  const now = new Date()
  const challenge = newChallenge('register', auth.userId, now)
  const [handleInsert, handleRead] = userHandleOf(db, auth.userId, randomToken(32))
  const [account, , handles, existing] = await db
    .batch([userRow(db, auth.userId), handleInsert, handleRead, passkeysOf(db, auth.userId), challenge.insert(db)])
    .catch(toGone)
  const user = account[0]
  const handle = handles[0]?.handle
  if (user === undefined || handle === undefined) throw userGone()
  if (existing.length >= MAX_PASSKEYS_PER_USER) throw tooManyPasskeys()
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(
    {
      challenge_id: challenge.id,
      options: {
        challenge: challenge.value,
        rp: { id: config.webauthn.rpId, name: config.webauthn.rpName },
        user: { id: handle, name: user.username, displayName: user.username },
        pubKeyCredParams: PASSKEY_ALGORITHMS.map((alg) => ({ type: 'public-key' as const, alg })),
        timeout: CHALLENGE_TTL_MS,
        excludeCredentials: existing.map(descriptorOf),
        authenticatorSelection: {
          residentKey: 'required' as const,
          requireResidentKey: true as const,
          userVerification: 'preferred' as const,
        },
        attestation: 'none' as const,
        extensions: { credProps: true as const },
      },
    },
    200,
  )
}

export const register: AppRouteHandler<typeof routes.register, AuthedEnv> = async (c) => {
  const { db, config, auth } = c.var
  const { challenge_id: challengeId, response, name } = c.req.valid('json')
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const now = new Date()
  const [taken, account] = await db.batch([takeChallenge(db, challengeId), userRow(db, auth.userId)])
  const user = account[0]
  if (user === undefined) throw userGone()
  const expected = liveChallenge(taken[0], 'register', now)
  if (expected === null || taken[0]?.userId !== auth.userId) throw rejected('challenge')
  const clientDataJSON = fromBase64Url(response.response.clientDataJSON)
  const attestationObject = fromBase64Url(response.response.attestationObject)
  if (clientDataJSON === null || attestationObject === null) throw rejected('client_data')
  const credential = await verifyRegistration(config.webauthn, expected, { clientDataJSON, attestationObject }).catch(
    (err: unknown) => {
      throw err instanceof PasskeyRejected ? rejected(err.check) : err
    },
  )
  // The JSON's id must be the credential the authenticator data carries.
  if (credential.credentialId !== unpadded(response.rawId) || unpadded(response.id) !== unpadded(response.rawId)) {
    throw rejected('credential')
  }
  const passkeyName = name ?? defaultName(c)
  const notice = securityEventMessage(user.email, user.username, 'passkey_added', passkeyName)
  const [inserted] = await db
    .batch([
      insertPasskey(db, {
        userId: user.id,
        credentialId: credential.credentialId,
        publicKey: JSON.stringify(credential.publicKey),
        algorithm: credential.algorithm,
        signCount: credential.signCount,
        name: passkeyName,
        transports: JSON.stringify(transportsOf(response.response.transports)),
        backedUp: credential.backedUp,
        createdAt: now,
      }),
      // A credential id registered already inserts nothing, and then neither is the owner mailed.
      guardThat(db, sql`changes() = 1`),
      // The cap again, in the insert's batch: registrations started before the last one landed
      // were all let through by their options.
      guardThat(db, atMostPasskeys(user.id, MAX_PASSKEYS_PER_USER)),
      mailer.queue(db, notice, now),
    ])
    .catch(async (error: unknown) => {
      if (!isGuardFailure(error)) return toGone(error)
      const [registered] = await passkeyByCredentialId(db, credential.credentialId)
      throw registered === undefined ? tooManyPasskeys() : passkeyExists()
    })
  const passkey = inserted[0]!
  await mailer.deliverSoon()
  return c.json(toPasskeyView(passkey), 201)
}

export const loginOptions: AppRouteHandler<typeof routes.loginOptions> = async (c) => {
  const { db, config } = c.var
  const username = (c.req.valid('json') as { username?: string } | undefined)?.username
  const now = new Date()
  // Known or not, the same work: one batch that finds the account by its login in SQL (one trip
  // to the primary, the challenge being a write), and one entry at least in allowCredentials.
  if (username !== undefined) await limitByAccount(c, 'passkey', username)
  const owner = username === undefined ? null : userIdByLogin(username)
  const challenge = newChallenge('login', owner, now)
  const [[owned], decoys] = await Promise.all([
    db.batch([passkeysOf(db, owner ?? 0), challenge.insert(db)]),
    // Made for every username, used or not, so a known name costs what an unknown one does.
    username === undefined ? undefined : decoyDescriptors(config, username),
  ])
  const allowCredentials = decoys === undefined ? [] : owned.length > 0 ? owned.map(descriptorOf) : decoys
  c.header('Cache-Control', NO_STORE)
  return c.json(
    {
      challenge_id: challenge.id,
      options: {
        challenge: challenge.value,
        rpId: config.webauthn.rpId,
        timeout: CHALLENGE_TTL_MS,
        allowCredentials,
        userVerification: 'preferred' as const,
      },
    },
    200,
  )
}

export const login: AppRouteHandler<typeof routes.login> = async (c) => {
  const { db, config, tokenKeys } = c.var
  if (wantsCookies(c)) assertCookieModeOrigin(c, config.corsOrigins)
  const now = new Date()
  const proven = await provePasskey(c, c.req.valid('json'), now)
  await limitByUser(c, 'passkey-login', proven.userId)
  // A passkey whose authenticator verified the user (UV) is both factors; without, an account
  // with a second factor goes on as after its password: the counter is kept, then mfa_required.
  if (proven.mfaEnabled && !proven.assertion.userVerified) {
    await withCounterChecked(() => db.batch(proven.use))
    throw await mfaRequired(proven.userId, tokenKeys, now)
  }
  return c.json(await withCounterChecked(() => signIn(c, proven.userId, now, { alongside: proven.use })), 200)
}

export const list: AppRouteHandler<typeof routes.list, AuthedEnv> = async (c) => {
  const rows = await passkeysOf(c.get('db'), c.get('auth').userId)
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json({ results: rows.map(toPasskeyView) }, 200)
}

export const rename: AppRouteHandler<typeof routes.rename, AuthedEnv> = async (c) => {
  const id = parseId(c.req.valid('param').id)
  if (id === null) throw notFound('passkey')
  const [renamed] = await renamePasskey(c.get('db'), c.get('auth').userId, id, c.req.valid('json').name)
  if (renamed === undefined) throw notFound('passkey')
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json(toPasskeyView(renamed), 200)
}

export const remove: AppRouteHandler<typeof routes.remove, AuthedEnv> = async (c) => {
  const { db, auth } = c.var
  const id = parseId(c.req.valid('param').id)
  if (id === null) throw notFound('passkey')
  const mailer = mailerOf(c)
  mailer.assertCanSend()
  const [owned, account] = await db.batch([passkeysOf(db, auth.userId), userRow(db, auth.userId)])
  const user = account[0]
  if (user === undefined) throw userGone()
  const passkey = owned.find((row) => row.id === id)
  if (passkey === undefined) throw notFound('passkey')
  // The delete checks the last-way rule itself, in its statement; the notice lands only with it.
  const notice = securityEventMessage(user.email, user.username, 'passkey_removed', passkey.name)
  await db
    .batch([
      removePasskey(db, auth.userId, id),
      guardThat(db, sql`changes() = 1`),
      mailer.queue(db, notice, new Date()),
    ])
    .catch(async (error: unknown) => {
      if (!isGuardFailure(error)) throw error
      // Removed by a concurrent request in the meantime, or kept as the last way in.
      const still = (await passkeysOf(db, auth.userId)).some((row) => row.id === id)
      if (!still) throw notFound('passkey')
      throw new ApiError(409, 'conflict', 'The account’s last way to sign in cannot be removed.')
    })
  await mailer.deliverSoon()
  return c.body(null, 204)
}

function newChallenge(purpose: PasskeyChallengePurpose, userId: number | SQL<number | null> | null, now: Date) {
  const id = randomToken(18)
  const value = randomToken(32)
  return {
    id,
    value,
    insert: (db: Db) =>
      insertChallenge(db, {
        id,
        challenge: value,
        purpose,
        userId,
        expiresAt: new Date(now.getTime() + CHALLENGE_TTL_MS),
      }),
  }
}

/**
 * The allowCredentials entries for a username with no passkey (or no account): one to three ids
 * derived under a server key from what the account lookup matches on (findUserByLogin's key), so
 * every spelling of a name, asked any number of times, gets the same answer, as a real account
 * would; and how many there are says nothing either, people having one to three passkeys.
 */
async function decoyDescriptors(config: Config, username: string) {
  const key = await derivedHmacKey(config.tokens.secret, 'passkey-decoy')
  const login = loginKeyOf(username)
  const first = await macOf(`${login}#0`, key)
  const count = 1 + ((fromBase64Url(first)?.[0] ?? 0) % 3)
  const ids = [first]
  for (let n = 1; n < count; n += 1) ids.push(await macOf(`${login}#${n}`, key))
  return ids.map((id) => ({ type: 'public-key' as const, id, transports: ['hybrid', 'internal'] as Transport[] }))
}

function descriptorOf(passkey: PasskeyRow) {
  const transports = JSON.parse(passkey.transports) as Transport[]
  return {
    type: 'public-key' as const,
    id: passkey.credentialId,
    ...(transports.length > 0 ? { transports } : {}),
  }
}

function transportsOf(reported: string[] | undefined): Transport[] {
  return [...new Set(reported ?? [])].filter((transport) => KNOWN_TRANSPORTS.has(transport)).sort() as Transport[]
}

export function toPasskeyView(passkey: PasskeyRow): PasskeyView {
  return {
    id: passkey.id,
    name: passkey.name,
    created_at: passkey.createdAt.toISOString(),
    last_used_at: passkey.lastUsedAt?.toISOString() ?? null,
    backed_up: passkey.backedUp,
    transports: JSON.parse(passkey.transports) as Transport[],
  }
}

/** "Passkey on <device>", from the browser or app that registered it. */
function defaultName(c: Context): string {
  return `Passkey on ${deviceOf(c).label}`.slice(0, 64)
}

const CHECK_DETAILS: Record<PasskeyCheck, string> = {
  client_data: 'clientDataJSON is malformed',
  type: 'clientDataJSON is not of a registration (webauthn.create)',
  challenge: 'the challenge is unknown, used, expired or not issued to you for registration',
  origin: 'the origin is not one of WEBAUTHN_ORIGINS',
  cross_origin: 'the ceremony ran in a cross-origin frame',
  attestation_object: 'the attestation object is malformed',
  authenticator_data: 'the authenticator data is malformed, or its backup flags disagree (BS without BE)',
  rp_id: 'the RP id hash is not that of WEBAUTHN_RP_ID',
  user_present: 'the authenticator did not see the user present',
  credential: 'the credential is missing, malformed or not the one named by id',
  algorithm: 'the key is not ES256, EdDSA (Ed25519) or RS256 (2048 bits)',
  user_handle: 'the user handle is not the owner’s',
  signature: 'the signature is invalid',
  counter: 'the signature counter did not grow',
}

function rejected(check: PasskeyCheck): ApiError {
  return new ApiError(400, 'passkey_rejected', `The passkey was not accepted: ${CHECK_DETAILS[check]}.`)
}

function tooManyPasskeys(): ApiError {
  return new ApiError(409, 'conflict', `An account has at most ${MAX_PASSKEYS_PER_USER} passkeys: remove one first.`)
}

function passkeyExists(): ApiError {
  return new ApiError(409, 'passkey_exists', 'This passkey is registered already.')
}

function toGone(error: unknown): never {
  if (isForeignKeyViolation(error)) throw userGone()
  throw error
}

export const passkeysRouter = createRouter()
  .openapi(routes.registerOptions, registerOptions)
  .openapi(routes.register, register)
  .openapi(routes.loginOptions, loginOptions)
  .openapi(routes.login, login)
  .openapi(routes.list, list)
  .openapi(routes.rename, rename)
  .openapi(routes.remove, remove)
