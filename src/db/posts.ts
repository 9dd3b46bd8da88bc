import { and, eq, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import { userGone } from '../lib/api-error'
import type { Db } from './client'
import { keysetCondition, keysetLimit, keysetOrder } from './keyset'
import type { Keyset, KeysetWindow } from './keyset'
import { posts, users } from './schema'

const postColumns = {
  id: posts.id,
  title: posts.title,
  body: posts.body,
  authorId: posts.authorId,
  authorUsername: users.username,
  createdAt: posts.createdAt,
  updatedAt: posts.updatedAt,
}

/** A post with its author's username, as every post response shows it. */
export type PostWithAuthor = {
  id: number
  title: string
  body: string
  authorId: number
  authorUsername: string
  createdAt: Date
  updatedAt: Date
}

function postQuery(db: Db, id: number) {
  return db.select(postColumns).from(posts).innerJoin(users, eq(users.id, posts.authorId)).where(eq(posts.id, id))
}

export async function findPost(db: Db, id: number): Promise<PostWithAuthor | undefined> {
  const [row] = await postQuery(db, id)
  return row
}

/**
 * A post and whether `callerId` is an administrator, in one round trip: what deciding who may
 * change the post needs.
 */
export async function findPostForCaller(
  db: Db,
  id: number,
  callerId: number,
): Promise<{ post: PostWithAuthor | undefined; callerIsAdmin: boolean }> {
  const [found, caller] = await db.batch([
    postQuery(db, id),
    db.select({ isAdmin: users.isAdmin }).from(users).where(eq(users.id, callerId)),
  ])
  return { post: found[0], callerIsAdmin: caller[0]?.isAdmin === true }
}

export interface PostFilters {
  authorId?: number | undefined
  search?: string | undefined
  ordering: 'created_at' | '-created_at'
}

/**
 * One keyset window of posts (`limit + 1` rows in walk order); cost is independent of depth
 * (no OFFSET, no COUNT).
 */
export async function listPosts(db: Db, filters: PostFilters, window: KeysetWindow): Promise<PostWithAuthor[]> {
  return (await postsQuery(db, filters, window)) ?? []
}

/**
 * One keyset window of a user's posts, newest first, and whether the user exists, in one round
 * trip; `undefined` when there is no such user.
 */
export async function listPostsOfUser(
  db: Db,
  userId: number,
  window: KeysetWindow,
): Promise<PostWithAuthor[] | undefined> {
  const [user, rows] = await db.batch([
    db.select({ id: users.id }).from(users).where(eq(users.id, userId)),
    postsQuery(db, { authorId: userId, ordering: '-created_at' }, window)!,
  ])
  return user.length === 0 ? undefined : rows
}

/** The query of one window, or null when the search has no word to look for (an empty page). */
function postsQuery(db: Db, filters: PostFilters, window: KeysetWindow) {
  const keyset: Keyset = {
    sortColumn: posts.createdAt,
    idColumn: posts.id,
    order: filters.ordering === 'created_at' ? 'asc' : 'desc',
  }
  const conditions: (SQL | undefined)[] = [keysetCondition(keyset, window)]
  if (filters.authorId !== undefined) conditions.push(eq(posts.authorId, filters.authorId))
  if (filters.search !== undefined) {
    const match = toFtsQuery(filters.search)
    if (match === null) return null
    conditions.push(sql`${posts.id} in (select rowid from posts_fts where posts_fts match ${match})`)
  }
  return db
    .select(postColumns)
    .from(posts)
    .innerJoin(users, eq(users.id, posts.authorId))
    .where(and(...conditions))
    .orderBy(...keysetOrder(keyset, window))
    .limit(keysetLimit(window))
}

/**
 * Inserts a post by the user `authorId` and reads their username, in one round trip (one batch).
 * A user that no longer exists fails the insert (foreign key): 401, as for any token whose
 * subject is gone.
 */
export async function insertPost(
  db: Db,
  authorId: number,
  content: { title: string; body: string },
  now: Date,
): Promise<PostWithAuthor> {
  const [inserted, author] = await db
    .batch([
      db
        .insert(posts)
        .values({ authorId, ...content, createdAt: now, updatedAt: now })
        .returning(),
      db.select({ username: users.username }).from(users).where(eq(users.id, authorId)),
    ])
    .catch((err: unknown) => {
      if (isForeignKeyViolation(err)) throw userGone()
      throw err
    })
  return { ...inserted[0]!, authorUsername: author[0]!.username }
}

function isForeignKeyViolation(err: unknown): boolean {
  for (let cause: unknown = err; cause instanceof Error; cause = cause.cause) {
    if (/FOREIGN KEY constraint failed/.test(cause.message)) return true
  }
  return false
}

/** Saves new content; undefined when the post was deleted meanwhile. */
export async function updatePost(
  db: Db,
  post: PostWithAuthor,
  changes: { title?: string | undefined; body?: string | undefined },
  now: Date,
): Promise<PostWithAuthor | undefined> {
  const [saved] = await db
    .update(posts)
    .set({ title: changes.title ?? post.title, body: changes.body ?? post.body, updatedAt: now })
    .where(eq(posts.id, post.id))
    .returning()
  return saved === undefined ? undefined : { ...saved, authorUsername: post.authorUsername }
}

export async function deletePost(db: Db, id: number): Promise<void> {
  await db.delete(posts).where(eq(posts.id, id))
}

/**
 * Turns free text into a safe FTS5 query: every word becomes a quoted term (all must match), so
 * FTS5 syntax in the input (quotes, AND/OR/NEAR, column filters, `*`) is searched for, never run.
 */
function toFtsQuery(text: string): string | null {
  const words = text.normalize('NFC').match(/[\p{L}\p{N}_]+/gu)
  if (words === null) return null
  return words
    .slice(0, 16)
    .map((word) => `"${word}"`)
    .join(' ')
}
