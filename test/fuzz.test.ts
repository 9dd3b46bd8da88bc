import { env } from 'cloudflare:workers'
import fc from 'fast-check'
import { beforeAll, describe, it } from 'vitest'
import { BASE_URL, fetchWorker, login, mintToken, registerUser, uniqueName } from './helpers'
import type { RegisteredUser, TokenPair } from './helpers'

// Property-based fuzzing of every route of the contract (docs/API.md § Endpoints).
// Generated and mutated bodies, content types, query strings, path ids, headers and tokens are
// sent to each route. For every response:
//   - status < 500;
//   - a 4xx is application/problem+json with type/title/status/detail/code, `status` matching;
//   - a refused request (status >= 400) changed no stored data: the users, posts, subscribers,
//     sessions and one_time_tokens tables are snapshotted around each request and compared.
//     The one contract-mandated exception is 401 `token_reused`, which revokes the session.
//
// Runs are deterministic (fixed seed per route). Environment variables do not reach workerd, so
// to fuzz harder raise RUNS_PER_ROUTE below (e.g. 500 for a soak run) or change SEED; a failure
// prints the seed, path and shrunk counterexample to replay with `{ seed, path }`.
const SEED = 20_260_601
const RUNS_PER_ROUTE = 12

// ---------------------------------------------------------------------------------------------
// Fixtures

interface Fixture {
  user: { id: number; username: string; email: string; password: string }
  admin: { id: number }
  postId: number
  subscriberId: number
}

let base: RegisteredUser
let basePair: TokenPair
let passwordHash: string
let realCursor: string

beforeAll(async () => {
  base = await registerUser()
  basePair = await login(base)
  const row = await env.DB.prepare('SELECT password_hash FROM users WHERE id = ?')
    .bind(base.id)
    .first<{ password_hash: string }>()
  passwordHash = row!.password_hash
  for (let i = 0; i < 3; i += 1) {
    const res = await send(
      'POST',
      '/api/v1/posts',
      { authorization: `Bearer ${basePair.access_token}`, 'content-type': 'application/json' },
      JSON.stringify({ title: `seed ${i}`, body: 'seed body' }),
    )
    if (res.status !== 201) throw new Error(`seed post: ${res.status}`)
  }
  const page = (await (await send('GET', '/api/v1/posts?limit=1', {})).json()) as { next: string }
  realCursor = new URL(page.next).searchParams.get('cursor')!
})

/** A fresh user (same password as `base`, inserted directly: no hashing), an admin, a post and a subscriber. */
async function makeFixture(): Promise<Fixture> {
  const now = Date.now()
  const insertUser = async (isAdmin: boolean) => {
    const username = uniqueName(isAdmin ? 'admin' : 'fuzz')
    const email = `${username}@example.com`
    const row = await env.DB.prepare(
      'INSERT INTO users (username, email, email_verified, is_admin, password_hash, created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?, ?) RETURNING id',
    )
      .bind(username, email, isAdmin ? 1 : 0, passwordHash, now, now)
      .first<{ id: number }>()
    return { id: row!.id, username, email, password: base.password }
  }
  const user = await insertUser(false)
  const admin = await insertUser(true)
  const post = await env.DB.prepare(
    'INSERT INTO posts (author_id, title, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING id',
  )
    .bind(user.id, 'fixture', 'fixture body', now, now)
    .first<{ id: number }>()
  const subscriber = await env.DB.prepare(
    "INSERT INTO subscribers (email, name, status, created_at, updated_at, unsubscribe_token_hash) VALUES (?, 'Sub', 'pending', ?, ?, ?) RETURNING id",
  )
    .bind(`${uniqueName('sub')}@example.com`, now, now, crypto.randomUUID())
    .first<{ id: number }>()
  return { user, admin: { id: admin.id }, postId: post!.id, subscriberId: subscriber!.id }
}

// ---------------------------------------------------------------------------------------------
// The routes of the contract

type Template = Record<string, unknown>
type TokenKind = 'user' | 'admin' | 'refresh'

interface RouteSpec {
  method: string
  /** `{id}` is replaced by a real id of `idOf` or by a generated one. */
  path: string
  idOf?: (f: Fixture) => number
  /** A valid body, to be mutated. */
  body?: (f: Fixture) => Template
}

const longPassword = 'another correct horse battery'
// A well-formed ID token whose signature no key of the test provider verifies (the mutations work on it).
const FUZZ_ID_TOKEN = `eyJhbGciOiJSUzI1NiIsImtpZCI6Imdvb2dsZS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2FjY291bnRzLmdvb2dsZS5jb20iLCJzdWIiOiIxIn0.${'A'.repeat(342)}`
const ROUTES: RouteSpec[] = [
  { method: 'GET', path: '/api/v1/health' },
  { method: 'GET', path: '/openapi.json' },
  { method: 'GET', path: '/docs' },
  { method: 'GET', path: '/.well-known/jwks.json' },
  {
    method: 'POST',
    path: '/api/v1/auth/register',
    body: () => {
      const u = uniqueName('reg')
      return { username: u, email: `${u}@example.com`, password: longPassword }
    },
  },
  {
    method: 'POST',
    path: '/api/v1/auth/token',
    body: (f) => ({ username: f.user.username, password: f.user.password }),
  },
  { method: 'POST', path: '/api/v1/auth/login', body: (f) => ({ username: f.user.email, password: f.user.password }) },
  { method: 'POST', path: '/api/v1/auth/token/refresh', body: () => ({ refresh_token: basePair.refresh_token }) },
  { method: 'POST', path: '/api/v1/auth/token/verify', body: () => ({ token: basePair.access_token }) },
  { method: 'POST', path: '/api/v1/auth/logout', body: () => ({ refresh_token: basePair.refresh_token }) },
  { method: 'POST', path: '/api/v1/auth/logout-all' },
  {
    method: 'POST',
    path: '/api/v1/auth/password/change',
    body: (f) => ({ old_password: f.user.password, new_password: longPassword }),
  },
  { method: 'POST', path: '/api/v1/auth/password/reset', body: (f) => ({ email: f.user.email }) },
  {
    method: 'POST',
    path: '/api/v1/auth/password/reset/confirm',
    body: () => ({ token: 'A'.repeat(43), new_password: longPassword }),
  },
  { method: 'POST', path: '/api/v1/auth/email/verify', body: () => ({ token: 'A'.repeat(43) }) },
  { method: 'POST', path: '/api/v1/auth/email/resend' },
  { method: 'GET', path: '/api/v1/auth/sessions' },
  { method: 'DELETE', path: '/api/v1/auth/sessions/{id}' },
  { method: 'POST', path: '/api/v1/auth/oidc/google', body: () => ({ id_token: FUZZ_ID_TOKEN, nonce: 'fuzz-nonce' }) },
  {
    method: 'POST',
    path: '/api/v1/auth/oidc/google/link',
    body: () => ({ id_token: FUZZ_ID_TOKEN, nonce: 'fuzz-nonce' }),
  },
  { method: 'DELETE', path: '/api/v1/auth/oidc/google/link' },
  // Passkeys: well-formed WebAuthn JSON with bytes that are not (the mutations work on it).
  { method: 'POST', path: '/api/v1/auth/passkeys/register/options' },
  {
    method: 'POST',
    path: '/api/v1/auth/passkeys/register',
    body: () => ({
      challenge_id: 'fuzz-challenge',
      response: {
        id: 'AAAA',
        rawId: 'AAAA',
        type: 'public-key',
        response: { clientDataJSON: 'AAAA', attestationObject: 'oWNmbXRkbm9uZQ', transports: ['internal'] },
      },
      name: 'Fuzz key',
    }),
  },
  { method: 'POST', path: '/api/v1/auth/passkeys/login/options', body: (f) => ({ username: f.user.username }) },
  {
    method: 'POST',
    path: '/api/v1/auth/passkeys/login',
    body: () => ({
      challenge_id: 'fuzz-challenge',
      response: {
        id: 'AAAA',
        rawId: 'AAAA',
        type: 'public-key',
        response: { clientDataJSON: 'AAAA', authenticatorData: 'AAAA', signature: 'AAAA', userHandle: 'AAAA' },
      },
    }),
  },
  { method: 'GET', path: '/api/v1/auth/passkeys' },
  { method: 'PATCH', path: '/api/v1/auth/passkeys/{id}', body: () => ({ name: 'Renamed' }) },
  { method: 'DELETE', path: '/api/v1/auth/passkeys/{id}' },
  { method: 'GET', path: '/.well-known/apple-app-site-association' },
  { method: 'GET', path: '/.well-known/assetlinks.json' },
  { method: 'GET', path: '/api/v1/users' },
  { method: 'GET', path: '/api/v1/users/{id}', idOf: (f) => f.user.id },
  { method: 'GET', path: '/api/v1/users/me' },
  {
    method: 'PATCH',
    path: '/api/v1/users/me',
    body: () => {
      const u = uniqueName('ren')
      return { username: u, email: `${u}@example.com` }
    },
  },
  { method: 'DELETE', path: '/api/v1/users/me', body: (f) => ({ password: f.user.password }) },
  {
    method: 'PATCH',
    path: '/api/v1/users/{id}',
    idOf: (f) => f.user.id,
    body: () => {
      const u = uniqueName('adm')
      return { username: u, email: `${u}@example.com`, is_admin: false }
    },
  },
  { method: 'DELETE', path: '/api/v1/users/{id}', idOf: (f) => f.user.id },
  { method: 'GET', path: '/api/v1/users/{id}/posts', idOf: (f) => f.user.id },
  { method: 'GET', path: '/api/v1/posts' },
  { method: 'POST', path: '/api/v1/posts', body: () => ({ title: 'A title', body: 'A body' }) },
  { method: 'GET', path: '/api/v1/posts/{id}', idOf: (f) => f.postId },
  {
    method: 'PUT',
    path: '/api/v1/posts/{id}',
    idOf: (f) => f.postId,
    body: () => ({ title: 'New title', body: 'New body' }),
  },
  { method: 'PATCH', path: '/api/v1/posts/{id}', idOf: (f) => f.postId, body: () => ({ title: 'Patched' }) },
  { method: 'DELETE', path: '/api/v1/posts/{id}', idOf: (f) => f.postId },
  {
    method: 'POST',
    path: '/api/v1/subscribers',
    body: () => ({ email: `${uniqueName('s')}@example.com`, name: 'Ann' }),
  },
  { method: 'POST', path: '/api/v1/subscribers/confirm', body: () => ({ token: 'A'.repeat(43) }) },
  { method: 'POST', path: '/api/v1/subscribers/unsubscribe', body: () => ({ token: 'A'.repeat(43) }) },
  { method: 'GET', path: '/api/v1/subscribers' },
  { method: 'GET', path: '/api/v1/subscribers/export' },
  { method: 'GET', path: '/api/v1/subscribers/{id}', idOf: (f) => f.subscriberId },
  {
    method: 'PATCH',
    path: '/api/v1/subscribers/{id}',
    idOf: (f) => f.subscriberId,
    body: () => ({ name: 'Bob', status: 'active' }),
  },
  { method: 'DELETE', path: '/api/v1/subscribers/{id}', idOf: (f) => f.subscriberId },
  // A dry run: a real send would mail every active subscriber of the shared test database.
  { method: 'POST', path: '/api/v1/posts/{id}/newsletter?dry_run=true', idOf: (f) => f.postId, body: () => ({}) },
  { method: 'GET', path: '/api/v1/posts/{id}/newsletter', idOf: (f) => f.postId },
  { method: 'DELETE', path: '/api/v1/posts/{id}/newsletter', idOf: (f) => f.postId },
  {
    method: 'POST',
    path: '/api/v1/subscribers/unsubscribe?token=AAAAAAAAAAAAAAAAAAAAAA',
    body: () => ({ 'List-Unsubscribe': 'One-Click' }),
  },
  {
    method: 'POST',
    path: '/api/v1/email/events',
    body: () => ({ type: 'email.bounced', created_at: '2026-12-01T00:00:00Z', data: { to: ['fuzz@example.com'] } }),
  },
  // Outside the contract: unknown routes (404) and wrong methods (405) must answer problems too.
  { method: 'PUT', path: '/api/v1/health' },
  { method: 'DELETE', path: '/api/v1/auth/token', body: () => ({}) },
  { method: 'POST', path: '/api/v1/no-such-route/{id}', idOf: (f) => f.postId, body: () => ({}) },
]

// ---------------------------------------------------------------------------------------------
// Arbitraries

// Printable ASCII: workerd UTF-8-encodes (and logs a warning for) any other header byte.
const latin1 = (maxLength: number) =>
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength })
const binary = (maxLength: number) => fc.string({ unit: 'binary', maxLength })
const hugeString = fc
  .tuple(
    fc.constantFrom('a', 'é', '😀', '\u0000', '\ud800', '\udc00x'),
    fc.oneof(
      fc.integer({ min: 0, max: 300 }),
      fc.integer({ min: 49_990, max: 50_010 }),
      fc.integer({ min: 60_000, max: 70_000 }),
    ),
  )
  .map(([c, n]) => c.repeat(Math.ceil(n / c.length)))
const weirdValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    'a\u0000b',
    '\ud800',
    '\udfff\ud800',
    '__proto__',
    '0',
    'null',
    'true',
    '💩'.repeat(200),
  ),
  binary(40),
  hugeString,
  fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }),
)
const EXTRA_KEYS = [
  '__proto__',
  'constructor',
  'is_admin',
  'id',
  'author_id',
  'status',
  'email_verified',
  'password_hash',
]
const bodyMutations = fc.array(fc.tuple(fc.constantFrom('drop', 'set', 'add'), fc.nat(), weirdValue), {
  minLength: 1,
  maxLength: 3,
})

function mutateBody(template: Template, ops: [string, number, unknown][]): Template {
  const out: Template = { ...template }
  for (const [op, n, value] of ops) {
    const keys = Object.keys(out)
    if (op === 'drop' && keys.length > 0) delete out[keys[n % keys.length]!]
    else if (op === 'set' && keys.length > 0) out[keys[n % keys.length]!] = value
    else
      Object.defineProperty(out, EXTRA_KEYS[n % EXTRA_KEYS.length]!, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      })
  }
  return out
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) ?? 'null'
  } catch {
    return '{"circular":true}'
  }
}

type BodySpec =
  | { kind: 'none' }
  | { kind: 'json-text'; text: string }
  | { kind: 'mutated'; ops: [string, number, unknown][]; asForm: boolean }
  | { kind: 'valid'; asForm: boolean }
  | { kind: 'bytes'; bytes: Uint8Array }

const bodySpec: fc.Arbitrary<BodySpec> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.json({ maxDepth: 3 }).map((text) => ({ kind: 'json-text' as const, text })),
  fc.anything({ maxDepth: 2 }).map((v) => ({ kind: 'json-text' as const, text: safeJson(v) })),
  fc
    .oneof(
      binary(200),
      latin1(200),
      fc.constantFrom('{', '{"a":', '[1,]', 'null', '"x"', '{"title":"\\ud800"}', '\u0000', '{}{}'),
    )
    .map((text) => ({ kind: 'json-text' as const, text })),
  fc
    .record({ ops: bodyMutations, asForm: fc.boolean() })
    .map(({ ops, asForm }) => ({ kind: 'mutated' as const, ops, asForm })),
  fc.boolean().map((asForm) => ({ kind: 'valid' as const, asForm })),
  fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ kind: 'bytes' as const, bytes })),
)

const contentType = fc.oneof(
  fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'APPLICATION/JSON;charset=latin1',
    'application/problem+json',
    'application/x-www-form-urlencoded',
    'text/plain',
    'multipart/form-data; boundary=xyz',
    'application/xml',
    ';',
    '',
    'none',
  ),
  latin1(40),
)

const queryValue = fc.oneof(
  fc.constantFrom(
    '0',
    '1',
    '-1',
    '20',
    '100',
    '101',
    '1e1',
    '1.5',
    ' 5',
    'abc',
    '',
    'created_at',
    '-created_at',
    'id',
    'pending',
    'active',
    'unsubscribed',
    'cookie',
    '%',
    '%zz',
    '%E0%A4%A',
    '99999999999999999999',
  ),
  fc.constant('CURSOR'),
  fc.tuple(fc.constant('CURSOR'), fc.nat(), fc.constantFrom('A', '_', '.', '=')).map(([, i, c]) => `CURSOR:${i}:${c}`),
  fc.nat().map(String),
  binary(30),
  fc.string({ maxLength: 3000 }),
)
const query = fc.array(
  fc.tuple(
    fc.constantFrom('limit', 'cursor', 'q', 'ordering', 'author', 'status', 'mode', 'page'),
    queryValue,
    fc.boolean(),
  ),
  { maxLength: 4 },
)

const idValue = fc.oneof(
  { weight: 3, arbitrary: fc.constant('REAL') },
  fc.constantFrom(
    '0',
    '-1',
    '1.5',
    '1e3',
    'abc',
    '%00',
    '%zz',
    '%',
    '99999999999999999999',
    '0x10',
    '%20 1',
    'me',
    'export',
    '9007199254740993',
  ),
  binary(20),
)

type TokenSpec = { kind: TokenKind } | { kind: 'mutated'; of: TokenKind; how: number; n: number; c: string }
const tokenSpec: fc.Arbitrary<TokenSpec> = fc.oneof(
  fc.constantFrom<TokenKind>('user', 'admin', 'refresh').map((kind) => ({ kind })),
  fc
    .record({
      of: fc.constantFrom<TokenKind>('user', 'admin', 'refresh'),
      how: fc.nat(7),
      n: fc.nat(),
      c: fc.constantFrom('A', 'a', '_', '-', '.', '=', '+', '/', ' ', '%'),
    })
    .map((m) => ({ kind: 'mutated' as const, ...m })),
)
const authorization = fc.oneof(
  fc.constant<null>(null),
  fc
    .tuple(
      fc.constantFrom(
        'Bearer',
        'bearer',
        'BEARER',
        'JWT',
        'jwt',
        'Basic',
        'Token',
        'Bearer\t',
        '',
        'Bearer  ',
        'Bearer,',
      ),
      tokenSpec,
    )
    .map(([scheme, token]) => ({ scheme, token })),
  latin1(80).map((raw) => ({ raw })),
  fc.tuple(latin1(20), latin1(20)).map(([u, p]) => ({ raw: `Basic ${btoa(`${u}:${p}`)}` })),
)
const otherHeaders = fc.record(
  {
    'if-none-match': fc.oneof(fc.constantFrom('*', '"x"', 'W/"x"', '"', '"a", "b"', ''), latin1(60)),
    'x-request-id': fc.oneof(latin1(300), fc.constantFrom('', 'abc', 'a'.repeat(256))),
    cookie: fc
      .tuple(
        fc.constantFrom(
          '__Host-edgepress-access',
          '__Host-edgepress-refresh',
          '__Host-edgepress-csrf',
          '__Host-edgepress-',
        ),
        fc.oneof(
          latin1(60),
          tokenSpec.map(() => 'TOKEN'),
        ),
      )
      .map(([k, v]) => `${k}=${v}`),
    'x-d1-bookmark': fc.oneof(
      latin1(80),
      fc.constantFrom('0000-0000', 'ffffffff-ffffffff-ffffffff', 'a-b-c-d-e-f-g-h-i', '00000001-00000002'),
    ),
    'x-csrf-token': latin1(100),
  },
  { requiredKeys: [] },
)

const requestSpec = fc.record({
  id: idValue,
  body: bodySpec,
  contentType,
  query,
  authorization,
  headers: otherHeaders,
})
type RequestSpec = typeof requestSpec extends fc.Arbitrary<infer T> ? T : never

// ---------------------------------------------------------------------------------------------
// Building requests

const b64url = (text: string) => btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
const unb64url = (part: string) => atob(part.replace(/-/g, '+').replace(/_/g, '/'))

function mutateToken(token: string, how: number, n: number, c: string, other: string): string {
  const parts = token.split('.')
  const i = n % Math.max(1, token.length)
  switch (how) {
    case 0: // flip one character
      return token.slice(0, i) + (token[i] === c ? 'B' : c) + token.slice(i + 1)
    case 1: // truncate
      return token.slice(0, i)
    case 2: {
      // alg none, no signature
      const header = JSON.parse(unb64url(parts[0]!)) as Record<string, unknown>
      return `${b64url(JSON.stringify({ ...header, alg: 'none' }))}.${parts[1]}.`
    }
    case 3: {
      // payload edited, signature kept
      const payload = JSON.parse(unb64url(parts[1]!)) as Record<string, unknown>
      const edits = [
        { sub: '1' },
        { token_type: 'refresh' },
        { exp: 1 },
        { jti: undefined },
        { sub: 1 },
        { is_admin: true },
      ]
      return `${parts[0]}.${b64url(JSON.stringify({ ...payload, ...edits[n % edits.length] }))}.${parts[2]}`
    }
    case 4: // standard base64 with padding instead of base64url
      return parts.map((p) => btoa(unb64url(p))).join('.')
    case 5: // header of one token, payload of another
      return `${parts[0]}.${other.split('.')[1]}.${parts[2]}`
    case 6:
      return `${token}.${c}`
    default:
      return `${token}${c}`
  }
}

async function tokenFor(spec: TokenSpec, f: Fixture): Promise<string> {
  const mint = async (kind: TokenKind) =>
    kind === 'refresh'
      ? mintToken({ sub: String(f.user.id), token_type: 'refresh', exp: Math.floor(Date.now() / 1000) + 86_400 })
      : mintToken({ sub: String(kind === 'admin' ? f.admin.id : f.user.id) })
  if (spec.kind !== 'mutated') return mint(spec.kind)
  return mutateToken(await mint(spec.of), spec.how, spec.n, spec.c, basePair.access_token)
}

function encodeValue(value: string, raw: boolean): string {
  if (raw) return value.replace(/[#&\s]/g, '')
  try {
    return encodeURIComponent(value)
  } catch {
    return value.replace(/[#&\s]/g, '') // lone surrogate: send it raw (the URL parser encodes it as U+FFFD)
  }
}

interface Built {
  method: string
  url: string
  headers: Headers
  body: string | Uint8Array | undefined
  describe: string
}

async function build(route: RouteSpec, f: Fixture, spec: RequestSpec): Promise<Built> {
  const id =
    spec.id === 'REAL'
      ? String(route.idOf?.(f) ?? 0)
      : encodeValue(spec.id, /^%|^[\w.-]*$/.test(spec.id)).replace(/\//g, '%2F')
  const search = spec.query
    .map(
      ([k, v, raw]) =>
        `${k}=${encodeValue(
          v.replace(/^CURSOR(:(\d+):(.))?$/u, (_m, _g, i?: string, c?: string) =>
            i === undefined ? realCursor : mutateToken(realCursor, 0, Number(i), c!, ''),
          ),
          raw,
        )}`,
    )
    .join('&')
  const url = `${BASE_URL}${route.path.replace('{id}', id)}${search === '' ? '' : `?${search}`}`

  const headers = new Headers()
  const setHeader = (name: string, value: string) => {
    try {
      headers.set(name, value)
    } catch {
      // Not a valid header value for the client's Headers; the platform would not send it either.
    }
  }
  const auth = spec.authorization
  if (auth !== null) {
    if ('raw' in auth) setHeader('authorization', auth.raw)
    else setHeader('authorization', `${auth.scheme} ${await tokenFor(auth.token, f)}`)
  }
  for (const [name, value] of Object.entries(spec.headers)) {
    if (value === undefined) continue
    setHeader(name, value.includes('TOKEN') ? value.replace('TOKEN', await tokenFor({ kind: 'user' }, f)) : value)
  }

  let body: string | Uint8Array | undefined
  const template = route.body?.(f) ?? {}
  const asText = (object: Template, asForm: boolean) =>
    asForm
      ? new URLSearchParams(
          Object.entries(object).map(([k, v]): [string, string] => [k, typeof v === 'string' ? v : safeJson(v)]),
        ).toString()
      : safeJson(object)
  switch (spec.body.kind) {
    case 'none':
      break
    case 'json-text':
      body = spec.body.text
      break
    case 'valid':
      body = asText(template, spec.body.asForm)
      break
    case 'mutated':
      body = asText(mutateBody(template, spec.body.ops), spec.body.asForm)
      break
    case 'bytes':
      body = spec.body.bytes
      break
  }
  if (route.method === 'GET' || route.method === 'HEAD') body = undefined
  if (spec.contentType !== 'none') setHeader('content-type', spec.contentType)
  const shown = typeof body === 'string' && body.length > 300 ? `${body.slice(0, 300)}… (${body.length} chars)` : body
  return {
    method: route.method,
    url,
    headers,
    body,
    describe: `${route.method} ${url.length > 400 ? `${url.slice(0, 400)}…` : url}\nheaders: ${JSON.stringify([...headers])}\nbody: ${JSON.stringify(shown instanceof Uint8Array ? [...shown] : shown)}`,
  }
}

function send(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Response> {
  return fetchWorker(`${BASE_URL}${path}`, { method, headers, body })
}

// ---------------------------------------------------------------------------------------------
// The invariant

const CHECKED_TABLES = ['users', 'posts', 'subscribers', 'sessions', 'one_time_tokens', 'external_identities']

let snapshotQueries: D1PreparedStatement[] | undefined

/**
 * A fingerprint of every row of the checked tables: per column its length and first and last 32
 * characters (posts may hold 50 000-character bodies; updated_at changes with any edit anyway).
 */
async function snapshot(): Promise<string> {
  if (snapshotQueries === undefined) {
    snapshotQueries = []
    for (const table of CHECKED_TABLES) {
      const { results } = await env.DB.prepare(`PRAGMA table_info(${table})`).all<{ name: string }>()
      const row = results
        .map(
          ({ name }) => `ifnull(length(${name}) || ':' || substr(${name}, 1, 32) || ':' || substr(${name}, -32), '~')`,
        )
        .join(" || '|' || ")
      snapshotQueries.push(
        env.DB.prepare(
          `SELECT count(*) AS n, group_concat(${row}, char(10)) AS rows FROM (SELECT * FROM ${table} ORDER BY rowid)`,
        ),
      )
    }
  }
  const results = await env.DB.batch(snapshotQueries)
  return JSON.stringify(results.map((r) => r.results))
}

async function checkInvariant(request: Built): Promise<void> {
  const before = await snapshot()
  const res = await fetchWorker(request.url, { method: request.method, headers: request.headers, body: request.body })
  const text = await res.text()
  const fail = (why: string) => {
    throw new Error(
      `${why}\n→ ${res.status} ${res.headers.get('content-type')} ${text.slice(0, 500)}\n${request.describe}`,
    )
  }
  if (res.status >= 500) fail('5xx')
  if (res.status < 400) return
  if (!(res.headers.get('content-type') ?? '').startsWith('application/problem+json'))
    fail('4xx without application/problem+json')
  let problem: Record<string, unknown>
  try {
    problem = JSON.parse(text) as Record<string, unknown>
  } catch {
    return fail('problem body is not JSON')
  }
  for (const field of ['type', 'title', 'detail', 'code'])
    if (typeof problem[field] !== 'string') fail(`problem without ${field}`)
  if (problem.status !== res.status) fail('problem status differs from the response status')
  // The contract makes reuse detection revoke the session (docs/API.md, /auth/token/refresh).
  if (problem.code === 'token_reused') return
  const after = await snapshot()
  if (after !== before) fail('a refused request changed stored data')
}

// ---------------------------------------------------------------------------------------------

describe('fuzzing every route: never a 5xx, always problem+json on 4xx, no change from a refused request', () => {
  it.each(ROUTES.map((route, index) => [`${route.method} ${route.path}`, route, index] as const))(
    '%s',
    async (_name, route, index) => {
      const fixture = await makeFixture()
      await fc.assert(
        fc.asyncProperty(requestSpec, async (spec) => {
          await checkInvariant(await build(route, fixture, spec))
        }),
        { seed: SEED + index, numRuns: RUNS_PER_ROUTE, endOnFailure: false },
      )
    },
  )
})
