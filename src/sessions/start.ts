import type { BatchItem } from 'drizzle-orm/batch'
import type { BatchStatements } from '../db/client'
import { insertSession } from '../db/sessions'
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
