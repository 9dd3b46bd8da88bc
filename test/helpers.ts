import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { SignJWT } from 'jose'
import type { JWTPayload } from 'jose'
import worker from '../src/index'
import type { Env as WorkerEnv } from '../src/config'
import type { TokenPair } from '../src/lib/tokens'

export const BASE_URL = 'https://edgepress.test'

export type { TokenPair }

export interface RegisteredUser {
  id: number
  username: string
  email: string
  password: string
}

let counter = 0

/** A name no other test in this file uses (storage is shared by the tests of one file). */
export function uniqueName(prefix = 'user'): string {
  counter += 1
  return `${prefix}_${counter}_${crypto.randomUUID().slice(0, 8)}`
}

/**
 * Calls the worker in-process, as a client would: `fetch`'s signature, the worker's own module and
 * bindings (or `workerEnv`), a fresh execution context per request. The body is read and the
 * request's background work (waitUntil: email delivery) finished before the response is returned,
 * so a test sees every effect of the request. The Workers pool's `exports.default.fetch` would do
 * the same over a loopback, but it gets slower with every request a test file makes
 * (cloudflare/workers-sdk#15446): ~0.3 ms per request at first, ~40 ms after 1,000.
 */
export async function fetchWorker(
  input: string | URL | Request,
  init?: RequestInit,
  workerEnv: WorkerEnv = env,
): Promise<Response> {
  const ctx = createExecutionContext()
  const res = await worker.fetch(new Request(input, init), workerEnv, ctx)
  const buffered = await res.arrayBuffer()
  await waitOnExecutionContext(ctx)
  return new Response(res.status === 204 || res.status === 304 ? null : buffered, res)
}

/** Calls the worker in-process: JSON body, optional Bearer token, extra headers. */
export function api(
  method: string,
  path: string,
  body?: unknown,
  token?: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  const allHeaders: Record<string, string> = { ...headers }
  if (body !== undefined) allHeaders['content-type'] ??= 'application/json'
  if (token !== undefined) allHeaders.authorization ??= `Bearer ${token}`
  const url =
    path.startsWith('/api/') || path.startsWith('/.well-known') || path === '/openapi.json'
      ? `${BASE_URL}${path}`
      : `${BASE_URL}/api/v1${path}`
  return fetchWorker(url, {
    method,
    headers: allHeaders,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  })
}

/**
 * Like api(), but runs the worker with another env (faulty or differently configured bindings).
 * Build each env object once: config and keys are memoised per env object. The body is read and
 * the request's background work (waitUntil) finished before the response is returned.
 */
export async function apiWithEnv(
  workerEnv: WorkerEnv,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<Response> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }
  return fetchWorker(`${BASE_URL}/api/v1${path}`, init, workerEnv)
}

/** Registers a fresh user; returns it with its password. */
export async function registerUser(overrides: Partial<Omit<RegisteredUser, 'id'>> = {}): Promise<RegisteredUser> {
  const username = overrides.username ?? uniqueName()
  const input = {
    username,
    email: overrides.email ?? `${username}@example.com`,
    password: overrides.password ?? 'correct horse battery staple',
  }
  const res = await api('POST', '/auth/register', input)
  if (res.status !== 201) throw new Error(`register failed: ${res.status} ${await res.text()}`)
  const body = (await res.json()) as { id: number }
  return { id: body.id, ...input }
}

/** Logs a user in with a JSON body; returns the token pair. */
export async function login(user: Pick<RegisteredUser, 'username' | 'password'>): Promise<TokenPair> {
  const res = await api('POST', '/auth/token', { username: user.username, password: user.password })
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as TokenPair
}

/** Registers and logs in a fresh user. */
export async function registerAndLogin(): Promise<{ user: RegisteredUser; tokens: TokenPair }> {
  const user = await registerUser()
  return { user, tokens: await login(user) }
}

/** Decodes a JWT's header and payload without verifying it. */
export function decodeJwt(token: string): {
  header: Record<string, unknown>
  payload: JWTPayload & Record<string, unknown>
} {
  const [header, payload] = token
    .split('.')
    .slice(0, 2)
    .map((part) => JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/'))))
  return { header, payload }
}

/**
 * Signs an HS256 token with the test JWT_SECRET, as another service holding the key would.
 * Defaults are a valid access token for `sub`; override or `undefined` out any claim/header.
 */
export async function mintToken(
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
  secret: string = env.JWT_SECRET,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const payload: Record<string, unknown> = {
    sub: '1',
    jti: crypto.randomUUID(),
    sid: crypto.randomUUID(),
    token_type: 'access',
    iat: now,
    nbf: now,
    exp: now + 300,
    ...claims,
  }
  for (const key of Object.keys(payload)) if (payload[key] === undefined) delete payload[key]
  const protectedHeader: Record<string, unknown> = { alg: 'HS256', typ: 'JWT', kid: 'test', ...header }
  for (const key of Object.keys(protectedHeader)) if (protectedHeader[key] === undefined) delete protectedHeader[key]
  return new SignJWT(payload as JWTPayload)
    .setProtectedHeader(protectedHeader as { alg: string })
    .sign(new TextEncoder().encode(secret))
}

/** Asserts the RFC 9457 shape and returns the parsed problem. */
export async function expectProblem(
  res: Response,
  status: number,
  code: string,
): Promise<{
  status: number
  code: string
  detail: string
  title: string
  type: string
  errors?: { path: string; message: string }[]
}> {
  const text = await res.text()
  if (res.status !== status) throw new Error(`expected ${status} ${code}, got ${res.status}: ${text}`)
  const contentType = res.headers.get('content-type') ?? ''
  if (!contentType.startsWith('application/problem+json')) throw new Error(`not problem+json: ${contentType}`)
  const body = JSON.parse(text)
  if (body.code !== code) throw new Error(`expected code ${code}, got ${body.code}: ${text}`)
  if (
    body.status !== status ||
    typeof body.title !== 'string' ||
    typeof body.detail !== 'string' ||
    body.type !== 'about:blank'
  ) {
    throw new Error(`malformed problem: ${text}`)
  }
  return body
}

/** Promotes a user to administrator directly in D1 (what `npm run create-admin` does). */
export async function makeAdmin(userId: number): Promise<void> {
  await env.DB.prepare('UPDATE users SET is_admin = 1 WHERE id = ?').bind(userId).run()
}

/** Registers and logs in a fresh administrator. */
export async function registerAdmin(): Promise<{ user: RegisteredUser; tokens: TokenPair }> {
  const user = await registerUser()
  await makeAdmin(user.id)
  return { user, tokens: await login(user) }
}

export interface OutboxMessage {
  id: number
  recipient: string
  subject: string
  text: string
  headers: Record<string, string>
  status: string
  attempts: number
  last_error: string | null
}

/** Emails queued for a recipient (case-insensitive), oldest first. */
export async function outboxMessagesTo(recipient: string): Promise<OutboxMessage[]> {
  const { results } = await env.DB.prepare(
    'SELECT id, recipient, subject, text, headers, status, attempts, last_error FROM email_outbox WHERE lower(recipient) = lower(?) ORDER BY id',
  )
    .bind(recipient)
    .all<Omit<OutboxMessage, 'headers'> & { headers: string }>()
  return results.map((row) => ({ ...row, headers: JSON.parse(row.headers) as Record<string, string> }))
}

/** The token of the newest email link `<base>/<path>?token=…` sent to `recipient`. */
export async function tokenFromEmail(recipient: string, path: string): Promise<string> {
  const messages = await outboxMessagesTo(recipient)
  for (const message of messages.reverse()) {
    const match = new RegExp(`/${path}\\?token=([^\\s>]+)`).exec(message.text)
    if (match !== null) return decodeURIComponent(match[1]!)
  }
  throw new Error(`no ${path} link emailed to ${recipient}`)
}
