import type { DeviceSession } from '../../db/sessions'
import { PRIVATE_NO_STORE } from '../../http/conditional-get'
import { clearTokenCookies } from '../../http/cookie-mode'
import { notFound } from '../../lib/api-error'
import { UNKNOWN_DEVICE } from '../../lib/device-label'
import { createRouter, sessionDeps } from '../../router'
import type { AppRouteHandler, AuthedEnv } from '../../router'
import { listDevices, signOutDevice } from '../../sessions/devices'
import * as routes from './devices.routes'
import type { DeviceView } from './devices.routes'

function toView(session: DeviceSession, currentSid: string): DeviceView {
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
  const { auth } = c.var
  const devices = await listDevices(sessionDeps(c), auth.userId, new Date())
  c.header('Cache-Control', PRIVATE_NO_STORE)
  return c.json({ results: devices.map((device) => toView(device, auth.sessionId)) }, 200)
}

export const endSession: AppRouteHandler<typeof routes.endSession, AuthedEnv> = async (c) => {
  const { id } = c.req.valid('param')
  const { auth } = c.var
  if (!(await signOutDevice(sessionDeps(c), auth, id, new Date()))) throw notFound('session')
  if (id === auth.sessionId && auth.viaCookie) clearTokenCookies(c)
  return c.body(null, 204)
}

export const devicesRouter = createRouter()
  .openapi(routes.listSessions, listSessions)
  .openapi(routes.endSession, endSession)
