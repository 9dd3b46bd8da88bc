// The data the benchmarks serve: one user registered through the API (so logins are real logins),
// and posts inserted straight into D1 (the API would take minutes for thousands).
import { randomBytes } from 'node:crypto'
import { expectJson } from './serve'

export interface Credentials {
  username: string
  password: string
}

export interface TokenPair {
  access_token: string
  refresh_token: string
}

/** POSTs `body` as JSON to `base` + `path`. */
export function postJson(
  base: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  })
}

/** Registers `username` with a random password through the API; returns the credentials and the user's id. */
export async function registerUser(
  base: string,
  db: D1Database,
  username: string,
): Promise<{ credentials: Credentials; userId: number }> {
  const credentials = { username, password: `${username}-${randomBytes(9).toString('base64url')}` }
  await expectJson(
    await postJson(base, '/api/v1/auth/register', { ...credentials, email: `${username}@example.com` }),
    'register',
    201,
  )
  const user = await db.prepare('SELECT id FROM users WHERE username = ?').bind(username).first<{ id: number }>()
  if (user === null) throw new Error('the registered user is not in D1')
  return { credentials, userId: user.id }
}

/** The user's row, copied as it is into the floor worker's D1 (same id, so the same token names it). */
export async function copyUser(from: D1Database, to: D1Database, userId: number): Promise<void> {
  const row = await from.prepare('SELECT * FROM users WHERE id = ?').bind(userId).first<Record<string, unknown>>()
  if (row === null) throw new Error('the registered user is not in D1')
  const columns = Object.keys(row)
  await to
    .prepare(`INSERT INTO users (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`)
    .bind(...columns.map((column) => row[column]))
    .run()
}

/** A password login through the API. */
export async function login(base: string, credentials: Credentials): Promise<TokenPair> {
  return expectJson<TokenPair>(await postJson(base, '/api/v1/auth/token', credentials), 'login')
}

const ROWS_PER_STATEMENT = 14 // × 7 parameters: D1 allows 100 bound parameters per statement
const STATEMENTS_PER_BATCH = 50

interface PostRows {
  authorId: number
  /** Posts number `first` … `first + rows - 1`, of `count` in all, created up to `now`. */
  first: number
  rows: number
  count: number
  now: number
}

/** One multi-row INSERT of posts. */
function insertStatement(db: D1Database, { authorId, first, rows, count, now }: PostRows): D1PreparedStatement {
  const params = Array.from({ length: rows }, (_, r) => {
    const n = first + r
    // Distinct, older-first timestamps (one per minute) so a cursor walk is realistic.
    const createdAt = now - (count - n) * 60_000
    // Published when written (a draft is not public), with a unique slug as the API would give it.
    return [
      authorId,
      `Post number ${n}`,
      `Body of post ${n}. ${'Lorem ipsum dolor sit amet. '.repeat(8)}`,
      `post-number-${n}`,
      createdAt,
      createdAt,
      createdAt,
    ]
  }).flat()
  const placeholders = Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?)').join(', ')
  return db
    .prepare(
      `INSERT INTO posts (author_id, title, body, slug, published_at, created_at, updated_at) VALUES ${placeholders}`,
    )
    .bind(...params)
}

/** Inserts `count` posts by `authorId` straight into D1, in batches of multi-row INSERTs. */
export async function insertPosts(db: D1Database, authorId: number, count: number): Promise<void> {
  const now = Date.now()
  let inserted = 0
  while (inserted < count) {
    const batch: D1PreparedStatement[] = []
    while (batch.length < STATEMENTS_PER_BATCH && inserted < count) {
      const rows = Math.min(ROWS_PER_STATEMENT, count - inserted)
      batch.push(insertStatement(db, { authorId, first: inserted, rows, count, now }))
      inserted += rows
    }
    await db.batch(batch)
  }
}
