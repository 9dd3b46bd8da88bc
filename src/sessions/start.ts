import type { SQL } from 'drizzle-orm'
import type { BatchItem } from 'drizzle-orm/batch'
import type { BatchStatements } from '../db/client'
import { isForeignKeyViolation } from '../db/constraint-errors'
import { dropSessionUnless, insertSession } from '../db/sessions'
import type { SessionDevice } from '../db/sessions'
import { issueTokenPair } from '../lib/tokens'
import type { TokenPair } from '../lib/tokens'
import type { SessionDeps } from './deps'

/** A login session that has just started: its first token pair and its id (the `sid` claim). */
export interface LoginSession {
  pair: TokenPair
  sessionId: string
}

/**
 * A new login session's first token pair and the INSERT that records it, to run in one batch with
 * the change behind it (a password change ends every other session in the same batch).
 */
export async function newLoginSession(
  deps: Pick<SessionDeps, 'db' | 'keys'>,
  start: { userId: number; device?: SessionDevice | undefined },
  now: Date,
): Promise<LoginSession & { insert: BatchItem<'sqlite'> }> {
  const sessionId = crypto.randomUUID()
  const subject = { userId: String(start.userId), sid: sessionId, authTime: Math.floor(now.getTime() / 1000) }
  const { pair, refresh } = await issueTokenPair(subject, deps.keys, now)
  const insert = insertSession(
    deps.db,
    {
      sid: sessionId,
      userId: start.userId,
      refresh: { jti: refresh.jti, issuedAt: new Date(refresh.iat * 1000), expiresAt: new Date(refresh.exp * 1000) },
      device: start.device,
    },
    now,
  )
  return { pair, sessionId, insert }
}

/**
 * Starts a login session for an account read at a replica, in one batch at the primary that keeps
 * the session, and runs `after`, only while `accountIsUnchanged` holds there (guard `after` with
 * it too). Undefined when it did not: the replica was behind, and the login must be decided from
 * the primary's row.
 */
export async function startCheckedLoginSession(
  deps: Pick<SessionDeps, 'db' | 'keys'>,
  start: { userId: number; device?: SessionDevice | undefined; accountIsUnchanged: SQL; after: BatchItem<'sqlite'>[] },
  now: Date,
): Promise<LoginSession | undefined> {
  const { pair, sessionId, insert } = await newLoginSession(deps, start, now)
  try {
    const [, dropped] = await deps.db.batch([
      insert,
      dropSessionUnless(deps.db, sessionId, start.accountIsUnchanged),
      ...start.after,
    ])
    return changedRows(dropped) === 0 ? { pair, sessionId } : undefined
  } catch (err) {
    // The account was deleted since: the session's foreign key refuses it, and nothing is written.
    if (isForeignKeyViolation(err)) return undefined
    throw err
  }
}

/** The rows a batched statement changed, from D1's result meta. */
function changedRows(result: unknown): number {
  const changes = (result as { meta?: { changes?: unknown } } | undefined)?.meta?.changes
  if (typeof changes !== 'number') throw new Error('D1 did not report the rows a statement changed')
  return changes
}

/**
 * Starts a login session (a new refresh family). `alongside` runs first in the same D1 batch, so
 * e.g. `last_login_at` and the new session land together or not at all.
 */
export async function startLoginSession(
  deps: Pick<SessionDeps, 'db' | 'keys'>,
  start: { userId: number; device?: SessionDevice | undefined; alongside?: BatchItem<'sqlite'>[] },
  now: Date,
): Promise<LoginSession> {
  const { pair, sessionId, insert } = await newLoginSession(deps, start, now)
  const statements: BatchStatements = [insert]
  statements.unshift(...(start.alongside ?? []))
  await deps.db.batch(statements)
  return { pair, sessionId }
}
