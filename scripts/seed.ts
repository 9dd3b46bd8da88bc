// `npm run seed [-- --remote]`: a few users with posts, and some subscribers, so a newcomer sees
// data at once. Idempotent: users and subscribers that already exist are left alone.
import { parseArgs } from 'node:util'
import { createHmac } from 'node:crypto'
import { hashPassword } from '../src/lib/passwords'
import { slugify } from '../src/lib/slugs'
import { usernameKey } from '../src/lib/usernames'
import { literal, openD1, passwordPepper } from './d1'
import type { Target } from './d1'

const { values } = parseArgs({ options: { remote: { type: 'boolean', default: false } } })
const target: Target = values.remote ? '--remote' : '--local'
const PASSWORD = 'edgepress-demo-password'

const people = [
  { username: 'alice', email: 'alice@example.com', posts: ['Hello from the edge', 'Why D1 and FTS5'] },
  { username: 'bob', email: 'bob@example.com', posts: ['Rotating refresh tokens', 'Keyset pagination, explained'] },
  { username: 'carol', email: 'carol@example.com', posts: ['Café notes: diacritics in search'] },
]
const readers = [
  { email: 'reader1@example.com', name: 'Reader One', status: 'active' },
  { email: 'reader2@example.com', name: 'Reader Two', status: 'pending' },
  { email: 'reader3@example.com', name: null, status: 'unsubscribed' },
]

/** Users and their posts, each inserted only if no user with that username or email exists. */
async function userStatements(): Promise<string[]> {
  const pepper = passwordPepper(target)
  let now = Date.now()
  const statements: string[] = []
  for (const person of people) {
    const hash = await hashPassword(PASSWORD, pepper)
    const key = literal(usernameKey(person.username))
    statements.push(
      `INSERT INTO users (username, username_key, email, email_verified, is_admin, password_hash, created_at, updated_at)
       SELECT ${literal(person.username)}, ${key}, ${literal(person.email)}, 1, 0, ${literal(hash)}, ${now}, ${now}
       WHERE NOT EXISTS (SELECT 1 FROM users WHERE username_key = ${key} OR lower(username) = lower(${literal(person.username)}) OR lower(email) = lower(${literal(person.email)}));`,
    )
    for (const title of person.posts) {
      now += 1
      // Published from now; a slug some post already has leaves '' for the fallback trigger (post-<id>).
      const slug = literal(slugify(title))
      statements.push(
        `INSERT INTO posts (author_id, title, body, slug, published_at, created_at, updated_at)
         SELECT id, ${literal(title)}, ${literal(`${title}. A sample post by ${person.username}, seeded by npm run seed.`)},
                CASE WHEN EXISTS (SELECT 1 FROM posts WHERE slug = ${slug}) THEN '' ELSE ${slug} END, ${now}, ${now}, ${now}
         FROM users WHERE username_key = ${key}
         AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.author_id = users.id AND p.title = ${literal(title)});`,
      )
    }
  }
  return statements
}

/** Subscribers, each inserted only if that email is not subscribed yet. */
function subscriberStatements(): string[] {
  const now = Date.now()
  return readers.map((reader) => {
    // Any unique value works for seeded rows: the real unsubscribe token is derived from the server
    // secret, which this script does not know, so these sample readers cannot be unsubscribed by link.
    const placeholderHash = createHmac('sha256', 'seed').update(reader.email).digest('base64url')
    return `INSERT INTO subscribers (email, name, status, created_at, updated_at, confirmed_at, unsubscribe_token_hash)
     SELECT ${literal(reader.email)}, ${literal(reader.name)}, ${literal(reader.status)}, ${now}, ${now},
            ${reader.status === 'pending' ? 'NULL' : now}, ${literal(placeholderHash)}
     WHERE NOT EXISTS (SELECT 1 FROM subscribers WHERE lower(email) = lower(${literal(reader.email)}));`
  })
}

const statements = [...(await userStatements()), ...subscriberStatements()]
const d1 = await openD1(target)
try {
  await d1.execute(statements.join('\n'))
  const [counts] = await d1.execute(
    'SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM posts) AS posts, (SELECT count(*) FROM subscribers) AS subscribers;',
  )
  console.log(
    `Seeded the ${d1.where}: ${people.map((p) => p.username).join(', ')} (password "${PASSWORD}"), their posts, and ${readers.length} subscribers.`,
  )
  console.log(`Totals now: ${counts?.users} users, ${counts?.posts} posts, ${counts?.subscribers} subscribers.`)
} finally {
  await d1.close()
}
