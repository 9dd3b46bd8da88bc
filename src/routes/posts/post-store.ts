import { and, eq, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import { posts, users } from '../../db/schema'
import type { Db } from '../../router'
import { keysetCondition, keysetOrder, toPage } from '../pagination'
import type { Keyset, Page, PageRequest } from '../pagination'
import type { Post } from './posts.routes'

const postColumns = {
  id: posts.id,
  title: posts.title,
  body: posts.body,
  authorId: posts.authorId,
  authorUsername: users.username,
  createdAt: posts.createdAt,
  updatedAt: posts.updatedAt,
}

export type PostWithAuthor = {
  id: number
  title: string
  body: string
  authorId: number
  authorUsername: string
  createdAt: Date
  updatedAt: Date
}

export function toPostView(row: PostWithAuthor): Post {
  return {
    id: row.id,
    title: row.title,
    body: row.body,
    author: { id: row.authorId, username: row.authorUsername },
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  }
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

/** One keyset page of posts; cost is independent of depth (no OFFSET, no COUNT). */
export async function listPosts(db: Db, filters: PostFilters, page: PageRequest): Promise<Page<Post>> {
  const keyset: Keyset = {
    sortColumn: posts.createdAt,
    idColumn: posts.id,
    order: filters.ordering === 'created_at' ? 'asc' : 'desc',
  }
  const conditions: (SQL | undefined)[] = [keysetCondition(keyset, page)]
  if (filters.authorId !== undefined) conditions.push(eq(posts.authorId, filters.authorId))
  if (filters.search !== undefined) {
    const match = toFtsQuery(filters.search)
    if (match === null) return { results: [], next: null, previous: null }
    conditions.push(sql`${posts.id} in (select rowid from posts_fts where posts_fts match ${match})`)
  }
  const rows = await db
    .select(postColumns)
    .from(posts)
    .innerJoin(users, eq(users.id, posts.authorId))
    .where(and(...conditions))
    .orderBy(...keysetOrder(keyset, page))
    .limit(page.limit + 1)
  return toPage(rows, page, (row) => ({ key: row.createdAt.getTime(), id: row.id }), toPostView)
}

/**
 * Turns free text into a safe FTS5 query: every word becomes a quoted term (all must match), so
 * FTS5 syntax in the input (quotes, AND/OR/NEAR, column filters, `*`) is searched for, never run.
 */
export function toFtsQuery(text: string): string | null {
  const words = text.normalize('NFC').match(/[\p{L}\p{N}_]+/gu)
  if (words === null) return null
  return words
    .slice(0, 16)
    .map((word) => `"${word}"`)
    .join(' ')
}
