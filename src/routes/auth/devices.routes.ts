import { createRoute, z } from '@hono/zod-openapi'
import { requireUser } from '../../middleware/authenticate'
import { Timestamp, json, problems } from '../../router'
import { atPrimary } from './auth.schemas'

// Sessions as devices: the signed-in user's live sessions and ending one of them. Sessions are
// security state (a revoked one must never show as live), so, like every /auth route, these read
// at the D1 primary.

const Place = z
  .object({
    country: z
      .string()
      .nullable()
      .openapi({ description: 'ISO 3166-1 alpha-2 country, as Cloudflare saw it', example: 'DE' }),
    colo: z
      .string()
      .nullable()
      .openapi({ description: 'The Cloudflare location (IATA code) that received the request', example: 'FRA' }),
  })
  .openapi('SessionPlace', { description: 'Where a request came from; each field null when unknown (e.g. locally).' })

export const DeviceSessionSchema = z
  .object({
    id: z.string().openapi({
      description: 'The session id: the `sid` claim of its tokens. Opaque; it only names the session to end.',
      example: '0b6f2a4e-6d3c-4f49-9a51-3f3c2b8e7d10',
    }),
    created_at: Timestamp.openapi({ description: 'The login that started the session' }),
    last_used_at: Timestamp.nullable().openapi({ description: 'The last refresh; null until the first one' }),
    device: z
      .string()
      .openapi({ description: "A short label derived from the login's User-Agent", example: 'Firefox on macOS' }),
    login: Place,
    last: Place.nullable().openapi({ description: 'Where the last refresh came from; null until the first one' }),
    current: z.boolean().openapi({ description: 'The session of the token that made this request' }),
  })
  .openapi('Session')

export type DeviceView = z.infer<typeof DeviceSessionSchema>

const SessionList = z.object({ results: z.array(DeviceSessionSchema) }).openapi('SessionList')

const SessionParams = z.object({
  id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: '0b6f2a4e-6d3c-4f49-9a51-3f3c2b8e7d10' }),
})

export const listSessions = createRoute({
  method: 'get',
  path: '/sessions',
  tags: ['Auth'],
  summary: 'List your signed-in devices (live sessions)',
  description:
    'Sessions that can still refresh (not revoked, refresh token unexpired, within `SESSION_MAX_AGE`), ' +
    "most recently used first (last refresh, else login); at most 100. `current` marks the caller's own.",
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  responses: {
    200: json(SessionList, 'The live sessions'),
    ...problems(401, 503),
  },
})

export const endSession = createRoute({
  method: 'delete',
  path: '/sessions/{id}',
  tags: ['Auth'],
  summary: 'Sign out one device (end one session)',
  description:
    'Ends the session exactly as logout does: its refresh token is refused at once, its access tokens ' +
    'within the revocation bound. Ending your own session is logging out (cookies are cleared in ' +
    "cookie mode). Another user's session, an unknown id and an already ended session are the same 404.",
  middleware: [atPrimary, requireUser()] as const,
  security: [{ Bearer: [] }],
  request: { params: SessionParams },
  responses: {
    204: { description: 'The session has ended' },
    ...problems(401, 403, 404, 429, 503),
  },
})
