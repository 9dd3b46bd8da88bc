import { sql } from 'drizzle-orm'
import type { AnyColumn, SQL } from 'drizzle-orm'
import type { CursorPosition } from '../lib/cursors'

// Keyset pagination: a page starts after the (sort key, id) of the previous page's edge row, so
// its cost does not grow with depth (no OFFSET) and inserts never shift it. The cursor that
// carries the edge is signed and parsed in the HTTP layer (src/routes/pagination.ts).

/** The ordering of a list: its sort column, its id column, and which way is "forward". */
export interface Keyset {
  sortColumn: AnyColumn
  idColumn: AnyColumn
  order: 'asc' | 'desc'
}

/** Where a page starts (null: the first page) and how many rows it shows. */
export interface KeysetWindow {
  position: CursorPosition | null
  limit: number
}

/** WHERE fragment that starts the walk after the cursor's edge row (row-value comparison). */
export function keysetCondition(keyset: Keyset, window: KeysetWindow): SQL | undefined {
  const { position } = window
  if (position === null) return undefined
  const forward = position.direction === 'next'
  const greater = (keyset.order === 'asc') === forward
  const edge = sql`(${position.key}, ${position.id})`
  const row = sql`(${keyset.sortColumn}, ${keyset.idColumn})`
  return greater ? sql`${row} > ${edge}` : sql`${row} < ${edge}`
}

/** ORDER BY for the walk: reversed when walking backwards (the page is flipped afterwards). */
export function keysetOrder(keyset: Keyset, window: KeysetWindow): SQL[] {
  const backwards = window.position?.direction === 'previous'
  const ascending = (keyset.order === 'asc') !== backwards
  return ascending
    ? [sql`${keyset.sortColumn} asc`, sql`${keyset.idColumn} asc`]
    : [sql`${keyset.sortColumn} desc`, sql`${keyset.idColumn} desc`]
}

/** `limit + 1` rows: the extra one only tells the page whether there is more. */
export function keysetLimit(window: KeysetWindow): number {
  return window.limit + 1
}

/** The edge a cursor carries for a row of a list ordered by (created_at, id). */
export function createdAtEdge(row: { createdAt: Date; id: number }): { key: number; id: number } {
  return { key: row.createdAt.getTime(), id: row.id }
}
