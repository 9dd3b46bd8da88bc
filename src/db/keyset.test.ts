import { env } from 'cloudflare:workers'
import { and, eq } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import type { CursorPosition } from '../lib/cursors'
import { createDb } from './client'
import { createdAtEdge, keysetCondition, keysetLimit, keysetOrder } from './keyset'
import type { Keyset, KeysetWindow } from './keyset'
import { posts } from './schema'
import { insertUser } from './users'

// The keyset fragments, run against real rows: one user's posts, with ties on created_at so that
// only the id decides their order.

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const at = (ms: number): Date => new Date(T0.getTime() + ms)

const [author] = await db.batch([
  insertUser(
    db,
    { username: uniqueName('keyset'), email: `${uniqueName('keyset')}@example.com`, passwordHash: 'h' },
    T0,
  ),
])
const authorId = author[0]!.id
// Five posts: created_at t, t, t+1, t+2, t+2 (ids ascending, so ties are ordered by id).
const rows = await db
  .insert(posts)
  .values(
    [0, 0, 1, 2, 2].map((ms, i) => ({
      authorId,
      title: `p${i}`,
      body: 'b',
      slug: uniqueName('keyset'),
      publishedAt: at(ms),
      createdAt: at(ms),
      updatedAt: at(ms),
    })),
  )
  .returning()
const ids = rows.map((row) => row.id)
const ascending = [...ids]
const descending = [...ids].reverse()

const keyset = (order: 'asc' | 'desc'): Keyset => ({ sortColumn: posts.createdAt, idColumn: posts.id, order })

function positionAt(index: number, direction: CursorPosition['direction']): CursorPosition {
  return { ...createdAtEdge(rows[index]!), direction, scope: 'test' }
}

/** The ids of one window of the author's posts, in walk order. */
async function walk(order: 'asc' | 'desc', window: KeysetWindow): Promise<number[]> {
  const found = await db
    .select({ id: posts.id })
    .from(posts)
    .where(and(eq(posts.authorId, authorId), keysetCondition(keyset(order), window)))
    .orderBy(...keysetOrder(keyset(order), window))
    .limit(keysetLimit(window))
  return found.map((row) => row.id)
}

describe('keysetCondition and keysetOrder', () => {
  it('start the first page (no position) at the beginning, in the list’s order', async () => {
    expect(keysetCondition(keyset('asc'), { position: null, limit: 2 })).toBeUndefined()
    expect(await walk('asc', { position: null, limit: 10 })).toEqual(ascending)
    expect(await walk('desc', { position: null, limit: 10 })).toEqual(descending)
  })

  it('walk forward strictly after the edge row, ties on the sort key broken by id', async () => {
    // Edge: the first of the two rows created at t.
    expect(await walk('asc', { position: positionAt(0, 'next'), limit: 10 })).toEqual(ascending.slice(1))
    // Edge: the first of the two rows created at t+2, walking newest first.
    expect(await walk('desc', { position: positionAt(4, 'next'), limit: 10 })).toEqual(descending.slice(1))
    expect(await walk('desc', { position: positionAt(3, 'next'), limit: 10 })).toEqual(descending.slice(2))
  })

  it('walk backwards from the edge row, nearest first (the caller flips the page)', async () => {
    expect(await walk('asc', { position: positionAt(3, 'previous'), limit: 10 })).toEqual(
      ascending.slice(0, 3).reverse(),
    )
    expect(await walk('desc', { position: positionAt(1, 'previous'), limit: 10 })).toEqual(
      descending.slice(0, 3).reverse(),
    )
  })

  it('pages through every row exactly once', async () => {
    const seen: number[] = []
    let position: CursorPosition | null = null
    for (;;) {
      const page = await walk('desc', { position, limit: 2 })
      seen.push(...page.slice(0, 2))
      if (page.length <= 2) break
      const edge = rows.find((row) => row.id === page[1])!
      position = { ...createdAtEdge(edge), direction: 'next', scope: 'test' }
    }
    expect(seen).toEqual(descending)
  })
})

describe('keysetLimit', () => {
  it('asks for one row more than the page shows, to tell whether there is more', async () => {
    expect(keysetLimit({ position: null, limit: 2 })).toBe(3)
    expect(await walk('asc', { position: null, limit: 2 })).toEqual(ascending.slice(0, 3))
  })
})

describe('createdAtEdge', () => {
  it('carries the row’s created_at in milliseconds and its id', () => {
    expect(createdAtEdge({ createdAt: at(5), id: 42 })).toEqual({ key: T0.getTime() + 5, id: 42 })
  })
})
