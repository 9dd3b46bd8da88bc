// `npm run create-admin -- [--username U] [--email E] [--password P] [--promote] [--remote]`
// Creates a verified administrator when neither the username nor the email is taken; asks for
// whatever is missing. Registration is open and unverified, so an existing account may be anyone's:
// it is promoted (its password untouched) only when the username (any case: usernameKey) and the
// email (any case) name the same user, that email is verified, and the operator confirms: y/N on a
// terminal, or --promote for scripts. Anything else is refused with the reason, and exit status 1.
// Local D1 by default (EDGEPRESS_D1_PERSIST=<dir> picks another local store, scripts/d1.ts).
import { createInterface } from 'node:readline/promises'
import { parseArgs } from 'node:util'
import { hashPassword } from '../src/lib/passwords'
import { usernameKey, usernameProblem } from '../src/lib/usernames'
import { applyMigrations, execute, literal, passwordPepper } from './d1'
import type { Target } from './d1'

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
const where = `${target.slice(2)} D1`

const prompt = createInterface({ input: process.stdin, output: process.stdout })
const ask = async (question: string, given: string | undefined): Promise<string> =>
  given ?? (await prompt.question(question)).trim()

const username = (await ask('Username: ', values.username)).normalize('NFC')
const email = await ask('Email: ', values.email)
if (username === '' || email === '') fail('a username and an email are required')

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

if (target === '--local') applyMigrations(target)
const key = usernameKey(username)
// Rows without a key (written before keys existed and not yet keyed by the API) come back too:
// their key is computed here, so no spelling of the name is missed.
const rows = execute(
  `SELECT id, username, username_key, email, email_verified, is_admin,
          lower(username) = lower(${literal(username)}) AS spelled_so, lower(email) = lower(${literal(email)}) AS by_email
   FROM users
   WHERE username_key = ${literal(key)} OR lower(username) = lower(${literal(username)}) OR lower(email) = lower(${literal(email)})
      OR username_key IS NULL
   ORDER BY id;`,
  target,
) as unknown as Account[]
const named = rows.filter(
  (row) =>
    row.username_key === key ||
    row.spelled_so === 1 ||
    (row.username_key === null && usernameKey(row.username) === key),
)
// As login picks (src/db/users.ts): the exact spelling, then the key's owner.
const byUsername =
  named.find((row) => row.username === username) ?? named.find((row) => row.username_key === key) ?? named[0]
const byEmail = rows.find((row) => row.by_email === 1)
const describe = (row: Account): string => `#${row.id} (${row.username}, ${row.email})`

if (byUsername === undefined && byEmail === undefined) {
  const problem = usernameProblem(username)
  const length = username.length
  if (problem !== null || length < 3 || length > 150) fail(`the username ${problem ?? 'must be 3-150 characters'}`)
  const password = await ask('Password (8-128 characters): ', values.password)
  prompt.close()
  const passwordLength = [...password].length
  if (passwordLength < 8 || passwordLength > 128) fail('the password must be 8-128 characters')
  const hash = await hashPassword(password, passwordPepper(target))
  const now = Date.now()
  const [created] = execute(
    `INSERT INTO users (username, username_key, email, email_verified, is_admin, password_hash, created_at, updated_at)
     VALUES (${literal(username)}, ${literal(key)}, ${literal(email)}, 1, 1, ${literal(hash)}, ${now}, ${now})
     RETURNING id;`,
    target,
  )
  console.log(`Created administrator #${created?.id} (${username}, ${email}) in the ${where}.`)
} else {
  if (byUsername === undefined) {
    fail(
      `the email ${email} is already registered to another user, ${describe(byEmail!)}: nothing changed. Choose another email, or run this with that user's username to promote them.`,
    )
  }
  if (byEmail === undefined) {
    fail(
      `the username "${username}" belongs to user #${byUsername.id}, whose email is not ${email}: nothing changed. Choose another username, or give that user's own email to promote them.`,
    )
  }
  if (byUsername.id !== byEmail.id) {
    fail(
      `the username "${username}" and the email ${email} belong to two different users, ${describe(byUsername)} and ${describe(byEmail)}: nothing changed.`,
    )
  }
  const user = byUsername
  if (user.email_verified !== 1) {
    fail(
      `the email of user ${describe(user)} is not verified, so nothing shows that its holder owns the account: nothing changed. Have them verify it first (the link they were sent, or POST /api/v1/auth/email/resend), then run this again.`,
    )
  }
  if (user.is_admin === 1) {
    prompt.close()
    console.log(`User ${describe(user)} is already an administrator (${where}); nothing changed.`)
    process.exit(0)
  }
  if (!values.promote) {
    if (!process.stdin.isTTY) {
      fail(
        `user ${describe(user)} exists with that verified email; pass --promote to make them an administrator (or run this in a terminal to be asked). Nothing changed.`,
      )
    }
    const answer = (
      await prompt.question(`Promote existing user ${describe(user)} to administrator in the ${where}? [y/N] `)
    ).trim()
    if (!/^y(es)?$/i.test(answer)) fail('not promoted: nothing changed.')
  }
  prompt.close()
  // Only the row just shown, and only while its email is still the verified one shown.
  const [promoted] = execute(
    `UPDATE users SET is_admin = 1, updated_at = ${Date.now()}
     WHERE id = ${user.id} AND email_verified = 1 AND lower(email) = lower(${literal(email)})
     RETURNING id;`,
    target,
  )
  if (promoted === undefined) fail(`user #${user.id} changed meanwhile (email or verification): nothing changed.`)
  const untouched = values.password === undefined ? '' : ' --password was ignored: their password is unchanged.'
  console.log(`Promoted user ${describe(user)} to administrator (${where}).${untouched}`)
}

function fail(message: string): never {
  console.error(`create-admin: ${message}`)
  process.exit(1)
}
