import { browserAssertion, browserAttestation } from './passkeys.js'
import type {
  Passkey,
  PasskeyCreationOptions,
  PasskeyRequestOptions,
  RegisterPasskeyOptions,
  SignInWithPasskeyOptions,
} from './passkeys.js'
import { DEFAULT_RETRY, isRetryableMethod, isRetryableStatus, retryAfterMs, retryDelayMs } from './retry.js'
import type { RetryPolicy } from './retry.js'
import { memoryStorage } from './storage.js'
import type { SessionStorage } from './storage.js'
import type { FetchResult, HttpMethod, InitArgs, OperationOf, PathsWith, Problem, SuccessData } from './types.js'

// The rules every edgepress client has to get right, in one place (docs/clients.md):
// - refresh when the access token has REFRESH_MARGIN_MS or less left, and once on a
//   `token_expired` 401, then replay the request once;
// - one refresh at a time (a second refresh of the same token looks like theft to the server);
// - a refresh that finishes after signOut() writes nothing back;
// - a refresh answered `token_reused` or `token_revoked` ends the local session;
// - send back the newest X-D1-Bookmark seen, so a read sees the client's own write;
// - retry network errors, 503 and 429 (after Retry-After, capped, jittered) for GET, HEAD, PUT and
//   DELETE only: a POST or PATCH is never repeated on its own.

const REFRESH_MARGIN_MS = 60_000
const STORAGE_KEY = 'edgepress.session'
const BOOKMARK_HEADER = 'x-d1-bookmark'
const CSRF_HEADER = 'x-csrf-token'
/** Codes of a refresh that can never succeed: the session is over. */
const SESSION_OVER = new Set(['token_reused', 'token_revoked', 'token_invalid', 'token_expired'])

/** A signed-in session as the client keeps it. Token mode holds the pair; cookie mode only the CSRF token. */
export interface ClientSession {
  accessToken?: string
  refreshToken?: string
  csrfToken?: string
  /** Epoch ms when the access token (or cookie) expires. */
  accessExpiresAt: number
  refreshExpiresAt: number
}

export type SessionChangeEvent = 'signed_in' | 'refreshed' | 'signed_out' | 'session_ended'

export interface SessionChange {
  event: SessionChangeEvent
  session: ClientSession | null
  /** For `session_ended`: the server's code (`token_reused`, `token_revoked`, …). */
  reason?: string
}

export interface ClientOptions {
  /** The API's origin, e.g. https://blog.example.com (paths start with /api/v1). */
  baseUrl: string
  /** Where the session is kept (default: memory). */
  storage?: SessionStorage
  /** The fetch to use (default: globalThis.fetch); tests pass the worker's. */
  fetch?: (input: Request) => Promise<Response>
  /** Called after the session starts, refreshes or ends. */
  onSessionChange?: (change: SessionChange) => void
  /** `cookies`: a browser app on the API's site; the server keeps the tokens in HttpOnly cookies. */
  mode?: 'tokens' | 'cookies'
  retry?: Partial<RetryPolicy>
  /** Clock, randomness and waiting, replaceable in tests. */
  now?: () => number
  random?: () => number
  sleep?: (ms: number) => Promise<void>
}

export type SignInResult = FetchResult<{ status: 'signed_in' } | { status: 'mfa_required' }>

interface TokenAnswer {
  access_token?: string
  refresh_token?: string
  csrf_token?: string
  expires_in: number
  refresh_expires_in: number
}

type TypedCall<M extends HttpMethod> = <P extends PathsWith<M>>(
  path: P,
  ...init: InitArgs<OperationOf<P, M>>
) => Promise<FetchResult<SuccessData<OperationOf<P, M>>>>

export interface EdgepressClient {
  GET: TypedCall<'get'>
  POST: TypedCall<'post'>
  PUT: TypedCall<'put'>
  PATCH: TypedCall<'patch'>
  DELETE: TypedCall<'delete'>
  signIn(
    credentials: { username: string; password: string } | { email: string; password: string },
  ): Promise<SignInResult>
  signInWithProvider(provider: string, token: { id_token: string; nonce?: string }): Promise<SignInResult>
  /**
   * Signs in with a passkey: a challenge from /auth/passkeys/login/options, the ceremony
   * (`getCredential`, by default the browser's), then /auth/passkeys/login. A ceremony the person
   * cancels rejects with the browser's NotAllowedError.
   */
  signInWithPasskey(options?: SignInWithPasskeyOptions): Promise<SignInResult>
  /** Adds a passkey to the signed-in account (403 `reauthentication_required` without a recent sign-in). */
  registerPasskey(options?: RegisterPasskeyOptions): Promise<FetchResult<Passkey>>
  /** The second step after a sign-in answered `mfa_required`: a TOTP code or a recovery code. */
  verifyMfa(proof: { code: string } | { recovery_code: string }): Promise<SignInResult>
  signOut(): Promise<void>
  signOutEverywhere(): Promise<void>
  /** The session kept now (null: signed out). */
  session(): Promise<ClientSession | null>
  /** The newest X-D1-Bookmark seen. */
  bookmark(): string | undefined
}

export function createClient(options: ClientOptions): EdgepressClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, '')
  const storage = options.storage ?? memoryStorage()
  const send = options.fetch ?? ((request: Request) => globalThis.fetch(request))
  const now = options.now ?? Date.now
  const random = options.random ?? Math.random
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)))
  const policy: RetryPolicy = { ...DEFAULT_RETRY, ...options.retry }
  const cookies = options.mode === 'cookies'
  const modeQuery = cookies ? '?mode=cookie' : ''

  let loaded: Promise<ClientSession | null> | undefined
  let current: ClientSession | null = null
  /** Bumped by every sign-in and sign-out: a refresh started before one writes nothing back. */
  let generation = 0
  let refreshing: Promise<ClientSession | null> | undefined
  let newestBookmark: string | undefined
  let mfaToken: string | undefined

  const load = (): Promise<ClientSession | null> => {
    loaded ??= Promise.resolve(storage.get(STORAGE_KEY)).then((raw) => {
      current = parseSession(raw)
      return current
    })
    return loaded
  }

  const store = async (session: ClientSession | null, change: SessionChange | undefined): Promise<void> => {
    current = session
    loaded = Promise.resolve(session)
    if (session === null) await storage.remove(STORAGE_KEY)
    else await storage.set(STORAGE_KEY, JSON.stringify(session))
    if (change !== undefined) options.onSessionChange?.(change)
  }

  const sessionFrom = (answer: TokenAnswer): ClientSession => {
    const at = now()
    return {
      ...(cookies
        ? { csrfToken: answer.csrf_token }
        : { accessToken: answer.access_token, refreshToken: answer.refresh_token }),
      accessExpiresAt: at + answer.expires_in * 1000,
      refreshExpiresAt: at + answer.refresh_expires_in * 1000,
    }
  }

  const remember = (response: Response): void => {
    const bookmark = response.headers.get(BOOKMARK_HEADER)
    // D1 bookmarks are fixed-width hex: the greater one is the newer.
    if (bookmark !== null && (newestBookmark === undefined || bookmark > newestBookmark)) newestBookmark = bookmark
  }

  /** One HTTP exchange: the network error or 503/429 retries that the method allows. */
  const exchange = async (build: () => Request, idempotent = false): Promise<Response> => {
    for (let attempt = 0; ; attempt += 1) {
      const request = build()
      const retryable = (idempotent || isRetryableMethod(request.method)) && attempt < policy.retries
      let response: Response
      try {
        response = await send(request)
      } catch (err) {
        if (!retryable || isAbort(err)) throw err
        await sleep(retryDelayMs(attempt + 1, policy, undefined, random))
        continue
      }
      remember(response)
      if (!retryable || !isRetryableStatus(response.status)) return response
      const serverDelay = retryAfterMs(response.headers.get('retry-after'), now())
      await response.body?.cancel()
      await sleep(retryDelayMs(attempt + 1, policy, serverDelay, random))
    }
  }

  const requestTo = (
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal },
    session: ClientSession | null,
  ): (() => Request) => {
    return () => {
      const headers = new Headers(init.headers)
      if (!headers.has('accept')) headers.set('accept', 'application/json')
      if (newestBookmark !== undefined && !headers.has(BOOKMARK_HEADER)) headers.set(BOOKMARK_HEADER, newestBookmark)
      if (session?.accessToken !== undefined && !headers.has('authorization'))
        headers.set('authorization', `Bearer ${session.accessToken}`)
      if (cookies && session?.csrfToken !== undefined && !isSafeMethod(method))
        headers.set(CSRF_HEADER, session.csrfToken)
      let body: string | undefined
      if (init.body !== undefined) {
        headers.set('content-type', 'application/json')
        body = JSON.stringify(init.body)
      }
      return new Request(`${baseUrl}${path}`, {
        method,
        headers,
        body,
        signal: init.signal,
        ...(cookies ? { credentials: 'include' as const } : {}),
      })
    }
  }

  /** POST /auth/token/refresh with the session's refresh token (or, in cookie mode, its cookie). */
  const sendRefresh = (session: ClientSession): Promise<Response> =>
    exchange(
      requestTo(
        'POST',
        `/api/v1/auth/token/refresh${modeQuery}`,
        { body: cookies ? {} : { refresh_token: session.refreshToken } },
        { ...session, accessToken: undefined },
      ),
    )

  /** Exchanges the refresh token (or cookie) for a new pair; one at a time, whoever asks. */
  const refresh = (): Promise<ClientSession | null> => {
    // The generation this refresh belongs to is the one it was asked in, before any wait.
    const startedIn = generation
    refreshing ??= (async () => {
      const session = await load()
      if (session === null) return null
      // Another client over the same storage (another tab) may have refreshed already: its pair is
      // this one's too, and refreshing the spent token again would look like theft to the server.
      const stored = parseSession(await storage.get(STORAGE_KEY))
      if (
        generation === startedIn &&
        stored !== null &&
        stored.refreshToken !== session.refreshToken &&
        stored.accessExpiresAt - now() > REFRESH_MARGIN_MS
      ) {
        current = stored
        loaded = Promise.resolve(stored)
        return stored
      }
      const response = await sendRefresh(session)
      if (response.ok) {
        const next = sessionFrom((await response.json()) as TokenAnswer)
        // Signed out (or in again) meanwhile: the new pair is handed to whoever waits (a sign-out
        // that needs a live token) but never stored.
        if (generation === startedIn) await store(next, { event: 'refreshed', session: next })
        return next
      }
      if (generation !== startedIn) {
        await response.body?.cancel()
        return null
      }
      const problem = await problemOf(response)
      if (response.status === 401 && SESSION_OVER.has(problem.code)) {
        generation += 1
        await store(null, { event: 'session_ended', session: null, reason: problem.code })
        return null
      }
      // A 503 or a network failure: the session may still be good; the caller gets its error.
      throw new RefreshFailed(problem, response)
    })().finally(() => {
      refreshing = undefined
    })
    return refreshing
  }

  /** The session to send with a request: refreshed first when its access token is about to expire. */
  const freshSession = async (): Promise<ClientSession | null> => {
    const session = await load()
    if (session === null || session.accessExpiresAt - now() > REFRESH_MARGIN_MS) return session
    return refresh()
  }

  const call = async (
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<FetchResult<unknown>> => {
    let session: ClientSession | null
    try {
      session = await freshSession()
    } catch (err) {
      if (err instanceof RefreshFailed) return { error: err.problem, response: err.response }
      throw err
    }
    let response = await exchange(requestTo(method, path, init, session))
    if (response.status === 401 && session !== null) {
      const problem = await problemOf(response.clone())
      if (problem.code === 'token_revoked' && current === session) {
        // Signed out elsewhere (logout-all, a password change): the session is over here too.
        generation += 1
        await store(null, { event: 'session_ended', session: null, reason: problem.code })
        return resultOf(response)
      }
      if (problem.code === 'token_expired') {
        // The clock was off, or the token expired on the way: refresh once and replay once.
        await response.body?.cancel()
        try {
          session = await refresh()
        } catch (err) {
          if (err instanceof RefreshFailed) return { error: err.problem, response: err.response }
          throw err
        }
        if (session === null) return { error: problem, response }
        response = await exchange(requestTo(method, path, init, session))
      }
    }
    return resultOf(response)
  }

  const signedIn = async (response: Response): Promise<SignInResult> => {
    if (response.ok) {
      generation += 1
      mfaToken = undefined
      const session = sessionFrom((await response.json()) as TokenAnswer)
      await store(session, { event: 'signed_in', session })
      return { data: { status: 'signed_in' }, response }
    }
    const problem = await problemOf(response)
    if (problem.code === 'mfa_required' && typeof problem.mfa_token === 'string') {
      mfaToken = problem.mfa_token
      return { data: { status: 'mfa_required' }, response }
    }
    return { error: problem, response }
  }

  const post = (path: string, body: unknown) =>
    exchange(requestTo('POST', `${path}${modeQuery}`, { body }, null)).then(signedIn)

  const endSession = async (path: string): Promise<void> => {
    const session = await load()
    const inFlight = refreshing
    generation += 1
    // From here on no call sends this session or starts a refresh of it.
    current = null
    loaded = Promise.resolve(null)
    if (session !== null) {
      // Best effort: the server ends the session; locally it ends whatever the answer. The access
      // token still works until it expires; an expired one needs a new pair first, and never a
      // second refresh of the same token: one under way is waited for.
      try {
        let usable = session
        if (inFlight !== undefined) usable = (await inFlight.catch(() => null)) ?? session
        else if (session.accessExpiresAt <= now()) usable = (await refreshFor(session)) ?? session
        // Ending a session twice does no harm: it is retried like an idempotent method.
        const response = await exchange(requestTo('POST', path, {}, usable), true)
        await response.body?.cancel()
      } catch {
        // Offline: the tokens are forgotten here; they expire on their own.
      }
    }
    mfaToken = undefined
    await store(null, { event: 'signed_out', session: null })
  }

  /** A refresh for signing out only: its tokens are used once and never stored. */
  const refreshFor = async (session: ClientSession): Promise<ClientSession | null> => {
    const response = await sendRefresh(session)
    if (!response.ok) {
      await response.body?.cancel()
      return null
    }
    return sessionFrom((await response.json()) as TokenAnswer)
  }

  const typed =
    (method: string) =>
    (path: string, init?: { params?: { path?: Record<string, unknown>; query?: Record<string, unknown> } }) =>
      call(method, withParams(path, init?.params), init as { body?: unknown })

  return {
    GET: typed('GET') as TypedCall<'get'>,
    POST: typed('POST') as TypedCall<'post'>,
    PUT: typed('PUT') as TypedCall<'put'>,
    PATCH: typed('PATCH') as TypedCall<'patch'>,
    DELETE: typed('DELETE') as TypedCall<'delete'>,
    signIn: (credentials) =>
      post('/api/v1/auth/token', {
        username: 'username' in credentials ? credentials.username : credentials.email,
        password: credentials.password,
      }),
    signInWithProvider: (provider, token) => post(`/api/v1/auth/oidc/${encodeURIComponent(provider)}`, token),
    signInWithPasskey: async (passkey = {}) => {
      const body = passkey.username === undefined ? {} : { username: passkey.username }
      const started = await exchange(requestTo('POST', '/api/v1/auth/passkeys/login/options', { body }, null))
      if (!started.ok) return { error: await problemOf(started), response: started }
      const { challenge_id, options } = (await started.json()) as {
        challenge_id: string
        options: PasskeyRequestOptions
      }
      const extra = { mediation: passkey.mediation, signal: passkey.signal }
      const response = await (passkey.getCredential ?? ((asked) => browserAssertion(asked, extra)))(options)
      return post('/api/v1/auth/passkeys/login', { challenge_id, response })
    },
    registerPasskey: async (passkey = {}) => {
      const init = passkey.signal === undefined ? {} : { signal: passkey.signal }
      const started = await call('POST', '/api/v1/auth/passkeys/register/options', init)
      if (started.error !== undefined) return started
      const { challenge_id, options } = started.data as { challenge_id: string; options: PasskeyCreationOptions }
      const create = passkey.createCredential ?? ((asked) => browserAttestation(asked, init))
      const response = await create(options)
      const body = { challenge_id, response, ...(passkey.name === undefined ? {} : { name: passkey.name }) }
      return (await call('POST', '/api/v1/auth/passkeys/register', { ...init, body })) as FetchResult<Passkey>
    },
    verifyMfa: async (proof) => {
      if (mfaToken === undefined) {
        return {
          error: {
            type: 'about:blank',
            title: 'No second step pending',
            status: 400,
            code: 'mfa_not_pending',
            detail: 'verifyMfa() follows a sign-in that answered mfa_required.',
          },
          response: undefined,
        }
      }
      return post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, ...proof })
    },
    signOut: () => endSession('/api/v1/auth/logout'),
    signOutEverywhere: () => endSession('/api/v1/auth/logout-all'),
    session: () => load(),
    bookmark: () => newestBookmark,
  }
}

/** Thrown inside the client when a refresh failed without ending the session (an outage). */
class RefreshFailed extends Error {
  constructor(
    readonly problem: Problem,
    readonly response: Response,
  ) {
    super(problem.detail ?? problem.title)
  }
}

/** Methods that change nothing: a cookie-mode request sends the CSRF token with every other. */
function isSafeMethod(method: string): boolean {
  return method === 'GET' || method === 'HEAD' || method === 'OPTIONS'
}

function isAbort(err: unknown): boolean {
  return err instanceof Error && err.name === 'AbortError'
}

function parseSession(raw: string | null | undefined): ClientSession | null {
  if (raw === null || raw === undefined) return null
  try {
    const value = JSON.parse(raw) as ClientSession
    return typeof value.accessExpiresAt === 'number' ? value : null
  } catch {
    return null
  }
}

/** `/posts/{id}` with `{path: {id: 1}, query: {limit: 20}}` → `/posts/1?limit=20`. */
function withParams(
  path: string,
  params: { path?: Record<string, unknown>; query?: Record<string, unknown> } | undefined,
): string {
  const filled = path.replace(/\{([^}]+)\}/g, (_, name: string) =>
    encodeURIComponent(String(params?.path?.[name] ?? '')),
  )
  const query = new URLSearchParams()
  for (const [name, value] of Object.entries(params?.query ?? {})) {
    if (value === undefined || value === null) continue
    for (const item of Array.isArray(value) ? value : [value]) query.append(name, String(item))
  }
  const search = query.toString()
  return search === '' ? filled : `${filled}?${search}`
}

async function problemOf(response: Response): Promise<Problem> {
  const text = await response.text()
  try {
    const body = JSON.parse(text) as Partial<Problem>
    if (typeof body.code === 'string') return { ...body, status: response.status } as Problem
  } catch {
    // Not JSON: described below.
  }
  return {
    type: 'about:blank',
    title: response.statusText || 'Error',
    status: response.status,
    code: response.status >= 500 ? 'service_unavailable' : 'unexpected_response',
    detail: text.slice(0, 200),
  }
}

async function resultOf(response: Response): Promise<FetchResult<unknown>> {
  if (response.ok) {
    const text = response.status === 204 ? '' : await response.text()
    return { data: text === '' ? undefined : JSON.parse(text), response }
  }
  if (response.status === 304) return { data: undefined, response }
  return { error: await problemOf(response), response }
}
