import { and, eq, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
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

export async function findPost(db: Db, id: number): Promise<PostWithAuthor | undefined> {
  const [row] = await db
    .select(postColumns)
    .from(posts)
    .innerJoin(users, eq(users.id, posts.authorId))
    .where(eq(posts.id, id))
  return row
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
  const keyset: Keyset = {
    sortColumn: posts.createdAt,
    idColumn: posts.id,
    order: filters.ordering === 'created_at' ? 'asc' : 'desc',
  }
  const conditions: (SQL | undefined)[] = [keysetCondition(keyset, window)]
  if (filters.authorId !== undefined) conditions.push(eq(posts.authorId, filters.authorId))
  if (filters.search !== undefined) {
    const match = toFtsQuery(filters.search)
    if (match === null) return []
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

export async function insertPost(
  db: Db,
  author: { id: number; username: string },
  content: { title: string; body: string },
  now: Date,
): Promise<PostWithAuthor> {
  const [post] = await db
    .insert(posts)
    .values({ authorId: author.id, ...content, createdAt: now, updatedAt: now })
    .returning()
  return { ...post!, authorUsername: author.username }
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
