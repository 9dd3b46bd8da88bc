import { createRoute, z } from '@hono/zod-openapi'
import { version } from '../../package.json'
import { pingD1 } from '../db/client'
import { NO_STORE } from '../http/conditional-get'
import { ApiError } from '../lib/api-error'
import { pingKv } from '../sessions/revocation-keys'
import { API_PREFIX, createRouter, json, problems } from '../router'
import type { AppRouteHandler } from '../router'

const Health = z
  .object({ status: z.literal('ok'), version: z.string().openapi({ example: version }) })
  .openapi('Health')

const health = createRoute({
  method: 'get',
  path: `${API_PREFIX}/health`,
  tags: ['Meta'],
  summary: 'Liveness, with D1 and KV reachability',
  responses: { 200: json(Health, 'D1 and KV answered'), ...problems(405, 503) },
})

const Jwks = z
  .object({ keys: z.array(z.record(z.string(), z.unknown())) })
  .openapi('JWKS', { description: 'RFC 7517 JWK Set; empty under HS256' })

const jwks = createRoute({
  method: 'get',
  path: '/.well-known/jwks.json',
  tags: ['Meta'],
  summary: 'Public keys that verify edgepress tokens',
  responses: { 200: json(Jwks, 'The current and previous public keys'), ...problems(405) },
})

const getHealth: AppRouteHandler<typeof health> = async (c) => {
  const [d1, kv] = await Promise.allSettled([pingD1(c.get('db')), pingKv(c.get('kv'))])
  const down = [d1.status === 'rejected' ? 'D1' : null, kv.status === 'rejected' ? 'KV' : null].filter(Boolean)
  if (down.length > 0) {
    throw new ApiError(503, 'service_unavailable', `Unreachable: ${down.join(', ')}.`, {
      headers: { 'Retry-After': '5' },
      cause: d1.status === 'rejected' ? d1.reason : kv.status === 'rejected' ? kv.reason : undefined,
    })
  }
  c.header('Cache-Control', NO_STORE)
  return c.json({ status: 'ok' as const, version }, 200)
}

const getJwks: AppRouteHandler<typeof jwks> = (c) => {
  c.header('Cache-Control', 'public, max-age=300')
  return c.json(c.get('tokenKeys').publicJwks, 200)
}

export const metaRouter = createRouter().openapi(health, getHealth).openapi(jwks, getJwks)
