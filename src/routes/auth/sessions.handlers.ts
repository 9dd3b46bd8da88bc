import { endSessions, isLiveSessionOf, listLiveSessions } from '../../db/sessions'
import type { DeviceSession } from '../../db/sessions'
import { PRIVATE_NO_STORE } from '../../http/conditional-get'
import { clearSessionCookies } from '../../http/cookie-session'
import { notFound } from '../../lib/api-error'
import { UNKNOWN_DEVICE } from '../../lib/device-label'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import type * as routes from './sessions.routes'
import type { DeviceSessionView } from './sessions.routes'

function toView(session: DeviceSession, currentSid: string): DeviceSessionView {
  return {
    id: session.sid,
    created_at: session.createdAt.toISOString(),
    last_used_at: session.lastUsedAt?.toISOString() ?? null,
    // Sessions started before devices were recorded have no label.
    device: session.deviceLabel ?? UNKNOWN_DEVICE,
    login: { country: session.loginCountry, colo: session.loginColo },
    last: session.lastUsedAt === null ? null : { country: session.lastCountry, colo: session.lastColo },
    current: session.sid === currentSid,
  }
}

export const listSessions: AppRouteHandler<typeof routes.listSessions, AuthedEnv> = async (c) => {
  const { auth, db, tokenKeys } = c.var
  const userId = Number(auth.userId)
  // A token minted by another service for a subject D1 cannot name has no sessions here.
  const sessions = Number.isSafeInteger(userId) ? await listLiveSessions(db, userId, new Date(), tokenKeys) : []
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json({ results: sessions.map((session) => toView(session, auth.sessionId)) }, 200)
}

export const endSession: AppRouteHandler<typeof routes.endSession, AuthedEnv> = async (c) => {
  const { id } = c.req.valid('param')
  const { auth, db, kv, tokenKeys } = c.var
  const userId = Number(auth.userId)
  const now = new Date()
  // Checked first, and by owner: the KV key below is written whatever D1 says, so an id that is
  // not a live session of this user (another user's included) must never reach it.
  if (!Number.isSafeInteger(userId) || !(await isLiveSessionOf(db, userId, id, now, tokenKeys)))
    throw notFound('session')
  const own = id === auth.sessionId
  await endSessions(
    db,
    kv,
    [id],
    userId,
    own ? 'logout' : 'signed out from another session',
    now,
    tokenKeys,
    own ? auth.expiresAt : 0,
  )
  if (own && auth.viaCookie) clearSessionCookies(c)
  return c.body(null, 204)
}
