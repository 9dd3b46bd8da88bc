// A fake email provider for the tests, in the shape src/email/transports.ts httpTransport speaks
// (Resend's): POST <scenario>/emails takes one message, POST <scenario>/emails/batch a JSON array
// of up to 100, each with a bearer key and an Idempotency-Key. vitest.config.ts routes the
// worker's requests for MAIL_PROVIDER_ORIGIN here (miniflare's outboundService, in Node); the
// tests (in workerd) drive it through the control endpoints below, over the same outbound
// network. Imported on both sides: plain data and standard Request/Response only.
//
// Like a real provider, it deduplicates by Idempotency-Key: a key it accepted once is answered
// again with the same 200 and sends nothing more; a key reused with another payload is 409. It
// records every message it accepted (what "left" for a recipient), and every request with what
// it answered. Each test works in its own scenario (a path prefix), so concurrent test files never
// see each other's mail or faults.
//
// Faults, set per scenario (PUT /__control/<scenario>/faults), are consumed in order by the
// requests they match:
//   - `status`: answer that status (500, 503, 429 with Retry-After, 400, 422 …) and body; with
//     `accept`, the messages are sent first (the provider did its work, the answer says otherwise
//     or is lost), so a retry under the same key must be deduplicated.
//   - `hang`: hold the request until POST /__control/<scenario>/release; then it is handled as
//     normal (a slow provider). With `accept`, the messages are sent on arrival and the request is
//     held (a provider that sent them and never answered: the client times out).
//   - `network`: the connection fails (the worker's fetch rejects); with `accept`, after sending.

export const MAIL_PROVIDER_ORIGIN = 'https://mail-provider.test'

/** The API key the fake expects (a test fixture: it echoes it back in the bodies of some faults). */
export const MAIL_PROVIDER_API_KEY = 'test-mail-api-key-0f1e2d3c4b5a'

export type MailFault =
  | { kind: 'status'; status: number; retryAfter?: string; body?: string; accept?: boolean }
  | { kind: 'hang'; accept?: boolean }
  | { kind: 'network'; accept?: boolean }

export interface MailFaultRule {
  fault: MailFault
  /** How many matching requests it applies to (default 1). */
  times?: number
  /** Applies to every matching request (`times` is ignored). */
  always?: boolean
  /** Only requests with a message to this address (case-insensitive). */
  recipient?: string
  /** Only batch requests (the default: both endpoints). */
  batchOnly?: boolean
}

/** A message the provider accepted: it left for its recipient. */
export interface DeliveredEmail {
  seq: number
  idempotencyKey: string
  from: string
  to: string
  subject: string
  text: string
  headers: Record<string, string>
}

/** A request the provider saw, and what it answered. */
export interface ProviderRequest {
  seq: number
  endpoint: 'single' | 'batch'
  idempotencyKey: string | null
  recipients: string[]
  /** The HTTP status answered, `hang` while held, `network` for a failed connection. */
  answer: number | 'hang' | 'network'
  /** Answered from the idempotency store: nothing was sent. */
  deduplicated: boolean
  /** Held by a `hang` fault (until released, or for good if the client gave up). */
  held: boolean
}

export interface ScenarioState {
  requests: ProviderRequest[]
  delivered: DeliveredEmail[]
  /** Requests held by a `hang` fault right now. */
  held: number
}

interface StoredAnswer {
  payload: string
  body: string
}

interface Scenario {
  requests: ProviderRequest[]
  delivered: DeliveredEmail[]
  faults: (MailFaultRule & { left: number })[]
  /** Idempotency keys accepted, with the payload they were accepted for and the answer. */
  keys: Map<string, StoredAnswer>
  held: (() => void)[]
}

const scenarios = new Map<string, Scenario>()
let seq = 0

function scenarioOf(name: string): Scenario {
  let scenario = scenarios.get(name)
  if (scenario === undefined) {
    scenario = { requests: [], delivered: [], faults: [], keys: new Map(), held: [] }
    scenarios.set(name, scenario)
  }
  return scenario
}

const json = (body: unknown, status = 200, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } })

/** Whether a request is for this fake (vitest.config.ts routes the rest elsewhere). */
export function isMailProviderRequest(request: Request): boolean {
  return new URL(request.url).origin === MAIL_PROVIDER_ORIGIN
}

/** The worker's requests to MAIL_PROVIDER_ORIGIN, and the tests' control requests. */
export async function handleMailProviderRequest(request: Request): Promise<Response> {
  const url = new URL(request.url)
  const control = /^\/__control\/([\w-]+)(?:\/(faults|release))?$/.exec(url.pathname)
  if (control !== null) return handleControl(request, control[1]!, control[2])
  const api = /^\/([\w-]+)\/emails(\/batch)?$/.exec(url.pathname)
  if (api === null || request.method !== 'POST') return json({ message: 'not found' }, 404)
  return handleSend(request, scenarioOf(api[1]!), api[2] === undefined ? 'single' : 'batch')
}

async function handleControl(request: Request, name: string, action: string | undefined): Promise<Response> {
  const scenario = scenarioOf(name)
  if (action === 'faults' && request.method === 'PUT') {
    const rules = (await request.json()) as MailFaultRule[]
    // `left` -1: never used up.
    scenario.faults = rules.map((rule) => ({ ...rule, left: rule.always === true ? -1 : (rule.times ?? 1) }))
    return json({ ok: true })
  }
  if (action === 'release' && request.method === 'POST') {
    const held = scenario.held.splice(0)
    for (const release of held) release()
    return json({ released: held.length })
  }
  if (action === undefined && request.method === 'GET') {
    const state: ScenarioState = {
      requests: scenario.requests,
      delivered: scenario.delivered,
      held: scenario.held.length,
    }
    return json(state)
  }
  if (action === undefined && request.method === 'DELETE') {
    for (const release of scenario.held.splice(0)) release()
    scenarios.delete(name)
    return json({ ok: true })
  }
  return json({ message: 'unknown control request' }, 404)
}

interface WireEmail {
  from?: unknown
  to?: unknown
  subject?: unknown
  text?: unknown
  headers?: unknown
}

/** The messages of a request, checked as a provider would; a string says what is wrong. */
function parseMessages(raw: unknown, endpoint: 'single' | 'batch'): WireEmail[] | string {
  const list = endpoint === 'batch' ? raw : [raw]
  if (!Array.isArray(list) || list.length === 0) return 'expected a non-empty JSON array'
  if (list.length > 100) return 'at most 100 emails per batch'
  for (const email of list as WireEmail[]) {
    if (typeof email !== 'object' || email === null) return 'each email is an object'
    if (typeof email.from !== 'string' || typeof email.subject !== 'string' || typeof email.text !== 'string') {
      return 'from, subject and text are required strings'
    }
    if (!Array.isArray(email.to) || email.to.length !== 1 || typeof email.to[0] !== 'string') {
      return 'to is an array of one address'
    }
    if (email.headers !== undefined && (typeof email.headers !== 'object' || email.headers === null)) {
      return 'headers is an object'
    }
  }
  return list as WireEmail[]
}

function takeFault(scenario: Scenario, endpoint: 'single' | 'batch', recipients: string[]): MailFault | undefined {
  const rule = scenario.faults.find(
    (candidate) =>
      candidate.left !== 0 &&
      (candidate.batchOnly !== true || endpoint === 'batch') &&
      (candidate.recipient === undefined ||
        recipients.some((to) => to.toLowerCase() === candidate.recipient!.toLowerCase())),
  )
  if (rule === undefined) return undefined
  if (rule.left > 0) rule.left -= 1
  return rule.fault
}

async function handleSend(request: Request, scenario: Scenario, endpoint: 'single' | 'batch'): Promise<Response> {
  const key = request.headers.get('idempotency-key')
  const record: ProviderRequest = {
    seq: ++seq,
    endpoint,
    idempotencyKey: key,
    recipients: [],
    answer: 0,
    deduplicated: false,
    held: false,
  }
  scenario.requests.push(record)
  const answer = (response: Response): Response => {
    record.answer = response.status
    return response
  }
  if (request.headers.get('authorization') !== `Bearer ${MAIL_PROVIDER_API_KEY}`) {
    return answer(json({ name: 'validation_error', message: 'API key is invalid' }, 403))
  }
  if (key === null || key.length === 0 || key.length > 256) {
    return answer(
      json({ name: 'validation_error', message: 'an Idempotency-Key of 1-256 characters is required' }, 400),
    )
  }
  const payload = await request.text()
  let raw: unknown
  try {
    raw = JSON.parse(payload)
  } catch {
    return answer(json({ name: 'validation_error', message: 'the body is not JSON' }, 400))
  }
  const messages = parseMessages(raw, endpoint)
  if (typeof messages === 'string') return answer(json({ name: 'validation_error', message: messages }, 422))
  record.recipients = messages.map((email) => (email.to as string[])[0]!)

  const fault = takeFault(scenario, endpoint, record.recipients)
  const accept = (): Response => {
    const stored = scenario.keys.get(key)
    if (stored !== undefined) {
      record.deduplicated = true
      if (stored.payload !== payload) {
        return json({ name: 'invalid_idempotent_request', message: 'this key was used with another payload' }, 409)
      }
      return new Response(stored.body, { status: 200, headers: { 'Content-Type': 'application/json' } })
    }
    const ids = messages.map((email) => {
      const delivered: DeliveredEmail = {
        seq: ++seq,
        idempotencyKey: key,
        from: email.from as string,
        to: (email.to as string[])[0]!,
        subject: email.subject as string,
        text: email.text as string,
        headers: (email.headers ?? {}) as Record<string, string>,
      }
      scenario.delivered.push(delivered)
      return { id: `msg_${delivered.seq}` }
    })
    const body = JSON.stringify(endpoint === 'batch' ? { data: ids } : ids[0])
    scenario.keys.set(key, { payload, body })
    return new Response(body, { status: 200, headers: { 'Content-Type': 'application/json' } })
  }

  if (fault === undefined) return answer(accept())
  if (fault.kind === 'status') {
    if (fault.accept === true) accept()
    const headers: Record<string, string> = fault.retryAfter === undefined ? {} : { 'Retry-After': fault.retryAfter }
    const body = (fault.body ?? `{"name":"fault","message":"injected ${fault.status}"}`).replaceAll(
      '{authorization}',
      request.headers.get('authorization') ?? '',
    )
    return answer(new Response(body, { status: fault.status, headers }))
  }
  if (fault.kind === 'network') {
    if (fault.accept === true) accept()
    record.answer = 'network'
    throw new Error('injected network failure')
  }
  // hang
  if (fault.accept === true) accept()
  record.answer = 'hang'
  record.held = true
  await new Promise<void>((resolve) => scenario.held.push(resolve))
  return answer(fault.accept === true ? json({ data: [] }) : accept())
}

// --- the tests' side (workerd), over the worker's outbound network ---

/** A scenario of its own for one test: its endpoints, faults, and what it saw. */
export function mailScenario(name: string) {
  const control = `${MAIL_PROVIDER_ORIGIN}/__control/${name}`
  return {
    name,
    singleUrl: `${MAIL_PROVIDER_ORIGIN}/${name}/emails`,
    batchUrl: `${MAIL_PROVIDER_ORIGIN}/${name}/emails/batch`,
    async setFaults(rules: MailFaultRule[]): Promise<void> {
      const res = await fetch(`${control}/faults`, { method: 'PUT', body: JSON.stringify(rules) })
      if (!res.ok) throw new Error(`setFaults: ${res.status}`)
    },
    async release(): Promise<number> {
      const res = await fetch(`${control}/release`, { method: 'POST' })
      return ((await res.json()) as { released: number }).released
    },
    async state(): Promise<ScenarioState> {
      const res = await fetch(control)
      return (await res.json()) as ScenarioState
    },
    async clear(): Promise<void> {
      await fetch(control, { method: 'DELETE' })
    },
  }
}

export type MailScenario = ReturnType<typeof mailScenario>
