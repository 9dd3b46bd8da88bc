import { and, eq, gt, isNull, lte, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import { ApiError, userGone } from '../lib/api-error'
import { slugCandidate, slugCandidates, slugify } from '../lib/slugs'
import type { Db } from './client'
import { isForeignKeyViolation, violatedUniqueIndex } from './constraint-errors'
import { keysetCondition, keysetLimit, keysetOrder } from './keyset'
import type { Keyset, KeysetWindow } from './keyset'
import { newsletters, posts, users } from './schema'

const postColumns = {
  id: posts.id,
  title: posts.title,
  body: posts.body,
  slug: posts.slug,
  publishedAt: posts.publishedAt,
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
  slug: string
  /** null: a draft; in the future: scheduled (src/lib/publication.ts). */
  publishedAt: Date | null
  authorId: number
  authorUsername: string
  createdAt: Date
  updatedAt: Date
}

/** How a post is looked up: its id, or its slug. */
export type PostKey = { id: number } | { slug: string }

function postQuery(db: Db, key: PostKey) {
  return db.select(postColumns).from(posts).innerJoin(users, eq(users.id, posts.authorId)).where(postKeyCondition(key))
}

function postKeyCondition(key: PostKey): SQL {
  return 'id' in key ? eq(posts.id, key.id) : eq(posts.slug, key.slug)
}

export async function findPost(db: Db, key: PostKey): Promise<PostWithAuthor | undefined> {
  const [row] = await postQuery(db, key)
  return row
}

/** The newsletter of a post, as far as changing or deleting the post must know it. */
export interface PostNewsletter {
  id: number
  status: string
}

/**
 * A post and whether `callerId` is an administrator, in one round trip: what deciding who may see
 * the post needs.
 */
export async function findPostForCaller(
  db: Db,
  key: PostKey,
  callerId: number,
): Promise<{ post: PostWithAuthor | undefined; callerIsAdmin: boolean }> {
  const [found, caller] = await db.batch([postQuery(db, key), isAdminQuery(db, callerId)])
  return { post: found[0], callerIsAdmin: caller[0]?.isAdmin === true }
}

/**
 * The same and the post's newsletter, still in one round trip: what changing or deleting the post
 * needs (its newsletter follows the post's life cycle).
 */
export async function findPostToChange(
  db: Db,
  key: PostKey,
  callerId: number,
): Promise<{ post: PostWithAuthor | undefined; callerIsAdmin: boolean; newsletter: PostNewsletter | undefined }> {
  const [found, caller, newsletter] = await db.batch([
    postQuery(db, key),
    isAdminQuery(db, callerId),
    db
      .select({ id: newsletters.id, status: newsletters.status })
      .from(newsletters)
      .innerJoin(posts, eq(posts.id, newsletters.postId))
      .where(postKeyCondition(key)),
  ])
  return { post: found[0], callerIsAdmin: caller[0]?.isAdmin === true, newsletter: newsletter[0] }
}

function isAdminQuery(db: Db, userId: number) {
  return db.select({ isAdmin: users.isAdmin }).from(users).where(eq(users.id, userId))
}

export type PostOrdering = 'published_at' | '-published_at' | 'created_at' | '-created_at'

/**
 * Which posts a list shows. `published`: the public blog, whoever asks. `draft` and `scheduled`:
 * the viewer's own posts in that state, or everyone's when the viewer is an administrator.
 */
export type PostListScope = { status: 'published' } | { status: 'draft' | 'scheduled'; viewerId: number }

export interface PostFilters {
  scope: PostListScope
  authorId?: number | undefined
  search?: string | undefined
  /** Ignored for drafts, which are listed by their last change, newest first. */
  ordering: PostOrdering
}

/** A window of a list and, for the public lists, when the next scheduled post goes out. */
export interface PostListWindow {
  /** `limit + 1` rows in walk order (src/db/keyset.ts). */
  rows: PostWithAuthor[]
  /**
   * The earliest publication still to come among all posts, or null. A cached public list is
   * stale from then on (src/middleware/edge-cache.ts); for the viewer's own lists it is null.
   */
  nextPublicationAt: Date | null
}

/** The keyset a list walks, and the edge of a row in it (what its cursor carries). */
export function postKeyset(filters: Pick<PostFilters, 'scope' | 'ordering'>): {
  keyset: Keyset
  edgeOf: (row: PostWithAuthor) => { key: number; id: number }
} {
  if (filters.scope.status === 'draft') {
    return {
      keyset: { sortColumn: posts.updatedAt, idColumn: posts.id, order: 'desc' },
      edgeOf: (row) => ({ key: row.updatedAt.getTime(), id: row.id }),
    }
  }
  const order = filters.ordering.startsWith('-') ? 'desc' : 'asc'
  if (filters.ordering.endsWith('created_at')) {
    return {
      keyset: { sortColumn: posts.createdAt, idColumn: posts.id, order },
      edgeOf: (row) => ({ key: row.createdAt.getTime(), id: row.id }),
    }
  }
  return {
    keyset: { sortColumn: posts.publishedAt, idColumn: posts.id, order },
    // Only drafts lack published_at, and drafts are never listed by it.
    edgeOf: (row) => ({ key: row.publishedAt?.getTime() ?? 0, id: row.id }),
  }
}

/**
 * One keyset window of posts; its cost is independent of depth (no OFFSET, no COUNT). A public
 * list also learns, in the same round trip, when the next scheduled post goes out.
 */
export async function listPosts(
  db: Db,
  filters: PostFilters,
  window: KeysetWindow,
  now: Date,
): Promise<PostListWindow> {
  const query = postsQuery(db, filters, window, now)
  if (filters.scope.status !== 'published') {
    return { rows: query === null ? [] : await query, nextPublicationAt: null }
  }
  if (query === null) return { rows: [], nextPublicationAt: await nextPublicationAt(db, now) }
  const [rows, next] = await db.batch([query, nextPublicationQuery(db, now)])
  return { rows, nextPublicationAt: dateOrNull(next[0]?.at) }
}

/**
 * One keyset window of a user's published posts, newest publication first, whether the user
 * exists, and when the next scheduled post goes out, in one round trip; `undefined` when there is
 * no such user.
 */
export async function listPostsOfUser(
  db: Db,
  userId: number,
  window: KeysetWindow,
  now: Date,
): Promise<PostListWindow | undefined> {
  const filters: PostFilters = { scope: { status: 'published' }, authorId: userId, ordering: '-published_at' }
  const [user, rows, next] = await db.batch([
    db.select({ id: users.id }).from(users).where(eq(users.id, userId)),
    postsQuery(db, filters, window, now)!,
    nextPublicationQuery(db, now),
  ])
  return user.length === 0 ? undefined : { rows, nextPublicationAt: dateOrNull(next[0]?.at) }
}

function nextPublicationQuery(db: Db, now: Date) {
  return db
    .select({ at: sql<number | null>`min(${posts.publishedAt})` })
    .from(posts)
    .where(gt(posts.publishedAt, now))
}

async function nextPublicationAt(db: Db, now: Date): Promise<Date | null> {
  const [row] = await nextPublicationQuery(db, now)
  return dateOrNull(row?.at)
}

function dateOrNull(ms: number | null | undefined): Date | null {
  return ms === null || ms === undefined ? null : new Date(ms)
}

/** The condition of a list's scope: published by now, or the viewer's (any for an admin) drafts or scheduled posts. */
function scopeCondition(scope: PostListScope, now: Date): SQL | undefined {
  if (scope.status === 'published') return lte(posts.publishedAt, now)
  const state = scope.status === 'draft' ? isNull(posts.publishedAt) : gt(posts.publishedAt, now)
  const viewerIsAdmin = sql`exists (select 1 from ${users} where ${users.id} = ${scope.viewerId} and ${users.isAdmin} = 1)`
  return and(state, or(eq(posts.authorId, scope.viewerId), viewerIsAdmin))
}

/** The query of one window, or null when the search has no word to look for (an empty page). */
function postsQuery(db: Db, filters: PostFilters, window: KeysetWindow, now: Date) {
  const { keyset } = postKeyset(filters)
  const conditions: (SQL | undefined)[] = [scopeCondition(filters.scope, now), keysetCondition(keyset, window)]
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

/** What a new post is made of; without a slug, one is derived from the title. */
export interface NewPost {
  title: string
  body: string
  slug?: string | undefined
  publishedAt: Date | null
}

// Candidate slugs looked up at once: `base`, `base-2` … `base-20` (one indexed IN query).
const SLUG_CANDIDATES_PER_LOOKUP = 20
// Posts created at once with the same title may pick the same free slug; the one that loses the
// unique index looks again, and after SLUG_LOOKUPS lost races (a burst of them) takes a random
// suffix instead, which no burst shares.
const SLUG_LOOKUPS = 2
const SLUG_ATTEMPTS = 6

/**
 * Inserts a post by the user `authorId` and reads their username in one batch, which also picks
 * a derived slug (freeSlugOf). A chosen slug that is
 * taken: 409 `slug_taken`. A user that no longer exists fails the insert (foreign key): 401, as
 * for any token whose subject is gone.
 */
export async function insertPost(db: Db, authorId: number, post: NewPost, now: Date): Promise<PostWithAuthor> {
  for (let attempt = 1; ; attempt++) {
    const slug = post.slug ?? (attempt <= SLUG_LOOKUPS ? freeSlugOf(slugify(post.title)) : randomSlug(post.title))
    try {
      const [inserted, author] = await db.batch([
        db
          .insert(posts)
          .values({ authorId, ...post, slug, createdAt: now, updatedAt: now })
          .returning(),
        db.select({ username: users.username }).from(users).where(eq(users.id, authorId)),
      ])
      return { ...inserted[0]!, authorUsername: author[0]!.username }
    } catch (err) {
      if (isForeignKeyViolation(err)) throw userGone()
      if (!isSlugTaken(err)) throw err
      if (post.slug !== undefined) throw slugTaken()
      if (attempt >= SLUG_ATTEMPTS) throw err
    }
  }
}

/** `base-<random number>`, for a title many posts are being created with at once, or have been. */
function randomSlug(title: string): string {
  return randomSlugOf(slugify(title))
}

function randomSlugOf(base: string): string {
  const n = 1000 + (crypto.getRandomValues(new Uint32Array(1))[0]! % 9_000_000)
  return slugCandidate(base, n)
}

/**
 * The first of `base`, `base-2` … `base-20` that no post has, chosen by the INSERT itself (a
 * subquery over the candidates, each one unique-index lookup), so that creating a post is one trip
 * to the primary; when all 20 are taken, `base-<random number>`. (Looking the candidates up first
 * was a second trip, and walking on 20 at a time one more per 20 posts of a title.)
 */
function freeSlugOf(base: string): SQL {
  const candidates = sql.join(
    slugCandidates(base, 1, SLUG_CANDIDATES_PER_LOOKUP).map((candidate, i) => sql`(${candidate}, ${i})`),
    sql`, `,
  )
  return sql`coalesce((select column1 from (values ${candidates}) where not exists (select 1 from ${posts} where ${posts.slug} = column1) order by column2 limit 1), ${randomSlugOf(base)})`
}

function isSlugTaken(err: unknown): boolean {
  return /^posts\.slug\b/.test(violatedUniqueIndex(err) ?? '')
}

export const slugTaken = (): ApiError => new ApiError(409, 'slug_taken', 'Another post already has this slug.')

/** What a write changes; undefined fields stay as they are. */
export interface PostChanges {
  title?: string | undefined
  body?: string | undefined
  slug?: string | undefined
  /** undefined: unchanged; null: back to draft. */
  publishedAt?: Date | null | undefined
}

/** Saves the changes; undefined when the post was deleted meanwhile. A chosen slug that is taken: 409 `slug_taken`. */
export async function updatePost(
  db: Db,
  post: PostWithAuthor,
  changes: PostChanges,
  now: Date,
): Promise<PostWithAuthor | undefined> {
  const [saved] = await db
    .update(posts)
    .set({
      title: changes.title ?? post.title,
      body: changes.body ?? post.body,
      slug: changes.slug ?? post.slug,
      publishedAt: changes.publishedAt === undefined ? post.publishedAt : changes.publishedAt,
      updatedAt: now,
    })
    .where(eq(posts.id, post.id))
    .returning()
    .catch((err: unknown) => {
      if (isSlugTaken(err)) throw slugTaken()
      throw err
    })
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
