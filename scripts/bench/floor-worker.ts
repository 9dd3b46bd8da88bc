// Bench-only Worker entry for `npm run bench` (scripts/bench/bench.ts): the floor for a signed-in
// read. NEVER deployed. It does the I/O of `GET /api/v1/users/me` and nothing else — verify the
// access token with jose (the key imported once per isolate, as the app memoises it); then, side
// by side, read the shared revocation filter from KV, look the session's revocation marker up in
// the Cache API, and read the user's row from D1 by primary key; answer JSON — so the app's req/s
// divided by this one's is what the app's own work costs (the issue that set the floor named its
// I/O then: a verify, one KV read and one D1 read; the marker lookup came with the revocation
// filter, docs/design.md § Revocation). bench.ts
// serves it exactly as it serves the app (bundled by `wrangler deploy --dry-run --minify`, the
// same Miniflare options and bindings), in the same run.
import { jwtVerify } from 'jose'
// wrangler.toml binds these Durable Objects: the entry must export their classes (unused here).
export { NewsletterSender, RevocationPublisher } from '../../src/index'

interface FloorEnv {
  DB: D1Database
  REVOKED_TOKENS: KVNamespace
  JWT_SECRET: string
}

// The key the app uses under HS256 (src/lib/token-keys.ts) and the names of
// src/sessions/revocation-keys.ts, spelled out rather than imported, so that nothing of the app's
// module graph runs here.
const FILTER_KEY = 'revocations:recent'
const MARKER_ORIGIN = 'https://revocations.edgepress.internal'
let key: Promise<CryptoKey> | undefined

function keyOf(secret: string): Promise<CryptoKey> {
  key ??= crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
    'verify',
  ])
  return key
}

export default {
  async fetch(request: Request, env: FloorEnv): Promise<Response> {
    const token = /^Bearer (.+)$/.exec(request.headers.get('authorization') ?? '')?.[1]
    if (token === undefined) return new Response(null, { status: 401 })
    const { payload } = await jwtVerify(token, await keyOf(env.JWT_SECRET), { algorithms: ['HS256'] })
    const [, , user] = await Promise.all([
      env.REVOKED_TOKENS.get(FILTER_KEY, { type: 'arrayBuffer', cacheTtl: 60 }),
      caches.default.match(`${MARKER_ORIGIN}/sid/${encodeURIComponent(String(payload.sid))}`),
      // Through a D1 session, as the app reads (at the nearest replica, with a bookmark back).
      env.DB.withSession('first-unconstrained')
        .prepare('SELECT id, username, email, created_at FROM users WHERE id = ?')
        .bind(Number(payload.sub))
        .first(),
    ])
    if (user === null) return new Response(null, { status: 401 })
    return Response.json(user)
  },
}
