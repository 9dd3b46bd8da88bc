// `npm run create-admin -- [--username U] [--email E] [--password P] [--remote]`
// Creates an administrator, or promotes an existing user (matched by username or email, any case)
// without touching their password. Asks for whatever is missing. Local D1 by default.
import { createInterface } from 'node:readline/promises'
import { parseArgs } from 'node:util'
import { hashPassword } from '../src/lib/passwords'
import { applyMigrations, execute, literal, passwordPepper } from './d1'
import type { Target } from './d1'

const { values } = parseArgs({
  options: {
    username: { type: 'string' },
    email: { type: 'string' },
    password: { type: 'string' },
    remote: { type: 'boolean', default: false },
  },
})
const target: Target = values.remote ? '--remote' : '--local'

const prompt = createInterface({ input: process.stdin, output: process.stdout })
const ask = async (question: string, given: string | undefined): Promise<string> =>
  given ?? (await prompt.question(question)).trim()

const username = await ask('Username: ', values.username)
const email = await ask('Email: ', values.email)
if (username === '' || email === '') fail('a username and an email are required')

if (target === '--local') applyMigrations(target)
const match = `lower(username) = lower(${literal(username)}) OR lower(email) = lower(${literal(email)})`
const existing = execute(`SELECT id, username, email, is_admin FROM users WHERE ${match};`, target)

if (existing.length > 1) fail('that username and that email belong to two different users')
if (existing.length === 1) {
  prompt.close()
  execute(`UPDATE users SET is_admin = 1, updated_at = ${Date.now()} WHERE ${match};`, target)
  const user = existing[0]!
  console.log(`Promoted user #${user.id} (${user.username}, ${user.email}) to administrator (${target.slice(2)} D1).`)
} else {
  const password = await ask('Password (8-128 characters): ', values.password)
  prompt.close()
  const length = [...password].length
  if (length < 8 || length > 128) fail('the password must be 8-128 characters')
  const hash = await hashPassword(password, passwordPepper(target))
  const now = Date.now()
  const [created] = execute(
    `INSERT INTO users (username, email, email_verified, is_admin, password_hash, created_at, updated_at)
     VALUES (${literal(username.normalize('NFC'))}, ${literal(email)}, 1, 1, ${literal(hash)}, ${now}, ${now})
     RETURNING id;`,
    target,
  )
  console.log(`Created administrator #${created?.id} (${username}, ${email}) in the ${target.slice(2)} D1.`)
}

function fail(message: string): never {
  console.error(`create-admin: ${message}`)
  process.exit(1)
}
