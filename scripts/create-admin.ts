// `npm run create-admin -- [--username U] [--email E] [--password P] [--promote] [--remote]`
// Creates a verified administrator when neither the username nor the email is taken; asks for
// whatever is missing. Registration is open and unverified, so an existing account may be anyone's:
// it is promoted (its password untouched) only when the username (any case: usernameKey) and the
// email (any case) name the same user, that email is verified, and the operator confirms: y/N on a
// terminal, or --promote for scripts. Anything else is refused with the reason, and exit status 1.
// Local D1 by default (EDGEPRESS_D1_PERSIST=<dir> picks another local store, scripts/d1.ts).
import { createInterface } from 'node:readline/promises'
import type { Interface } from 'node:readline/promises'
import { parseArgs } from 'node:util'
import { hashPassword } from '../src/lib/passwords'
import { usernameKey, usernameProblem } from '../src/lib/usernames'
import { literal, openD1, passwordPepper } from './d1'
import type { D1Connection, Target } from './d1'

const { values } = parseArgs({
  options: {
    username: { type: 'string' },
    email: { type: 'string' },
    password: { type: 'string' },
    promote: { type: 'boolean', default: false },
    remote: { type: 'boolean', default: false },
  },
})
const target: Target = values.remote ? '--remote' : '--local'

interface Account {
  id: number
  username: string
  username_key: string | null
  email: string
  email_verified: number
  is_admin: number
  spelled_so: number
  by_email: number
}

/** What the operator asked for, and where. */
interface Request {
  username: string
  email: string
  key: string
  d1: D1Connection
  prompt: Interface
}

/** Refused: printed as `create-admin: <reason>`, exit status 1. */
class Refusal extends Error {}

function refuse(reason: string): never {
  throw new Refusal(reason)
}

const describe = (row: Account): string => `#${row.id} (${row.username}, ${row.email})`

async function ask(prompt: Interface, question: string, given: string | undefined): Promise<string> {
  return given ?? (await prompt.question(question)).trim()
}

/** The account the username names (as login picks it, src/db/users.ts) and the one the email names. */
async function findAccounts(request: Request): Promise<{ byUsername?: Account; byEmail?: Account }> {
  const { username, email, key } = request
  // Rows without a key (written before keys existed and not yet keyed by the API) come back too:
  // their key is computed here, so no spelling of the name is missed.
  const rows = (await request.d1.execute(
    `SELECT id, username, username_key, email, email_verified, is_admin,
            lower(username) = lower(${literal(username)}) AS spelled_so, lower(email) = lower(${literal(email)}) AS by_email
     FROM users
     WHERE username_key = ${literal(key)} OR lower(username) = lower(${literal(username)}) OR lower(email) = lower(${literal(email)})
        OR username_key IS NULL
     ORDER BY id;`,
  )) as unknown as Account[]
  const named = rows.filter(
    (row) =>
      row.username_key === key ||
      row.spelled_so === 1 ||
      (row.username_key === null && usernameKey(row.username) === key),
  )
  // The exact spelling, then the key's owner.
  const byUsername =
    named.find((row) => row.username === username) ?? named.find((row) => row.username_key === key) ?? named[0]
  return { byUsername, byEmail: rows.find((row) => row.by_email === 1) }
}

async function createAdministrator(request: Request): Promise<string> {
  const { username, email, key, d1 } = request
  const problem = usernameProblem(username)
  const length = username.length
  if (problem !== null || length < 3 || length > 150) refuse(`the username ${problem ?? 'must be 3-150 characters'}`)
  const password = await ask(request.prompt, 'Password (8-128 characters): ', values.password)
  const passwordLength = [...password].length
  if (passwordLength < 8 || passwordLength > 128) refuse('the password must be 8-128 characters')
  const hash = await hashPassword(password, passwordPepper(target))
  const now = Date.now()
  const [created] = await d1.execute(
    `INSERT INTO users (username, username_key, email, email_verified, is_admin, password_hash, created_at, updated_at)
     VALUES (${literal(username)}, ${literal(key)}, ${literal(email)}, 1, 1, ${literal(hash)}, ${now}, ${now})
     RETURNING id;`,
  )
  return `Created administrator #${created?.id} (${username}, ${email}) in the ${d1.where}.`
}

/** The one verified account both the username and the email name; anything else is refused. */
function sameVerifiedAccount(request: Request, accounts: { byUsername?: Account; byEmail?: Account }): Account {
  const { username, email } = request
  const { byUsername, byEmail } = accounts
  if (byUsername === undefined) {
    refuse(
      `the email ${email} is already registered to another user, ${describe(byEmail!)}: nothing changed. Choose another email, or run this with that user's username to promote them.`,
    )
  }
  if (byEmail === undefined) {
    refuse(
      `the username "${username}" belongs to user #${byUsername.id}, whose email is not ${email}: nothing changed. Choose another username, or give that user's own email to promote them.`,
    )
  }
  if (byUsername.id !== byEmail.id) {
    refuse(
      `the username "${username}" and the email ${email} belong to two different users, ${describe(byUsername)} and ${describe(byEmail)}: nothing changed.`,
    )
  }
  if (byUsername.email_verified !== 1) {
    refuse(
      `the email of user ${describe(byUsername)} is not verified, so nothing shows that its holder owns the account: nothing changed. Have them verify it first (the link they were sent, or POST /api/v1/auth/email/resend), then run this again.`,
    )
  }
  return byUsername
}

async function confirmPromotion(request: Request, user: Account): Promise<void> {
  if (values.promote) return
  if (!process.stdin.isTTY) {
    refuse(
      `user ${describe(user)} exists with that verified email; pass --promote to make them an administrator (or run this in a terminal to be asked). Nothing changed.`,
    )
  }
  const answer = (
    await request.prompt.question(
      `Promote existing user ${describe(user)} to administrator in the ${request.d1.where}? [y/N] `,
    )
  ).trim()
  if (!/^y(es)?$/i.test(answer)) refuse('not promoted: nothing changed.')
}

async function promote(request: Request, user: Account): Promise<string> {
  const { d1, email } = request
  if (user.is_admin === 1) return `User ${describe(user)} is already an administrator (${d1.where}); nothing changed.`
  await confirmPromotion(request, user)
  // Only the row just shown, and only while its email is still the verified one shown.
  const [promoted] = await d1.execute(
    `UPDATE users SET is_admin = 1, updated_at = ${Date.now()}
     WHERE id = ${user.id} AND email_verified = 1 AND lower(email) = lower(${literal(email)})
     RETURNING id;`,
  )
  if (promoted === undefined) refuse(`user #${user.id} changed meanwhile (email or verification): nothing changed.`)
  const untouched = values.password === undefined ? '' : ' --password was ignored: their password is unchanged.'
  return `Promoted user ${describe(user)} to administrator (${d1.where}).${untouched}`
}

/** Creates or promotes; returns what was done. */
async function createAdmin(prompt: Interface): Promise<string> {
  const username = (await ask(prompt, 'Username: ', values.username)).normalize('NFC')
  const email = await ask(prompt, 'Email: ', values.email)
  if (username === '' || email === '') refuse('a username and an email are required')
  const d1 = await openD1(target)
  try {
    const request: Request = { username, email, key: usernameKey(username), d1, prompt }
    const accounts = await findAccounts(request)
    if (accounts.byUsername === undefined && accounts.byEmail === undefined) return await createAdministrator(request)
    return await promote(request, sameVerifiedAccount(request, accounts))
  } finally {
    await d1.close()
  }
}

async function main(): Promise<number> {
  const prompt = createInterface({ input: process.stdin, output: process.stdout })
  try {
    console.log(await createAdmin(prompt))
    return 0
  } catch (error) {
    if (!(error instanceof Refusal)) throw error
    console.error(`create-admin: ${error.message}`)
    return 1
  } finally {
    prompt.close()
  }
}

main().then(
  (status) => process.exit(status),
  (error: unknown) => {
    console.error('create-admin: failed:', error instanceof Error ? (error.stack ?? error.message) : error)
    process.exit(1)
  },
)
