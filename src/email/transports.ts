import type { Config } from '../config'
import { ApiError } from '../lib/api-error'

export interface OutgoingEmail {
  from: string
  to: string
  subject: string
  text: string
  headers: Record<string, string>
}

/**
 * How a provider answered a batch: accepted (2xx); to retry later (429, 5xx, a network error or
 * a timeout), after `retryAfterSeconds` when it said; or refused for good (another 4xx), with its
 * words, the API key cut out.
 */
export type BatchDelivery =
  | { outcome: 'accepted' }
  | { outcome: 'retry'; retryAfterSeconds: number | undefined; error: string }
  | { outcome: 'rejected'; error: string }

export interface MailTransport {
  readonly name: string
  /**
   * Delivers one email or throws; the outbox records the error and retries later. The
   * idempotency key is the same on every retry of one outbox row.
   */
  send(email: OutgoingEmail, options: { idempotencyKey: string }): Promise<void>
  /**
   * Hands up to 100 emails to the provider in one request. The key is the same on every retry of
   * the batch (the same recipients in the same order), so a provider that saw it already sends
   * nothing again.
   */
  sendBatch(emails: OutgoingEmail[], options: { idempotencyKey: string }): Promise<BatchDelivery>
}

function printEmail(email: OutgoingEmail): void {
  const headerLines = Object.entries(email.headers).map(([name, value]) => `${name}: ${value}`)
  console.log(
    [
      '--- email ---',
      `From: ${email.from}`,
      `To: ${email.to}`,
      `Subject: ${email.subject}`,
      ...headerLines,
      '',
      email.text,
      '--- end ---',
    ].join('\n'),
  )
}

/**
 * Local development: prints the whole message (recipient, subject, text with its links and
 * tokens) to the log, as the contract asks (docs/API.md § Email). Never configure it in production.
 */
export const consoleTransport: MailTransport = {
  name: 'console',
  async send(email) {
    printEmail(email)
  },
  async sendBatch(emails) {
    for (const email of emails) printEmail(email)
    return { outcome: 'accepted' }
  },
}

const SEND_TIMEOUT_MS = 20_000

/**
 * An HTTP email API in the shape Resend (and several others) accept: POST JSON
 * `{from, to, subject, text, headers}` (or an array of them to the batch endpoint) with a bearer
 * API key and an `Idempotency-Key`.
 */
export function httpTransport(endpoints: { single: string; batch: string }, apiKey: string): MailTransport {
  const post = (endpoint: string, body: unknown, idempotencyKey: string) =>
    fetch(endpoint, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${apiKey}`,
        'content-type': 'application/json',
        'idempotency-key': idempotencyKey,
      },
      body: JSON.stringify(body),
      // Well inside the outbox's 60 s send lease, so a slow provider cannot lead to a second send.
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    })
  // The provider's words help the operator; the key is cut out in case it is echoed back.
  const excerpt = async (response: Response) =>
    (await response.text().catch(() => '')).slice(0, 200).replaceAll(apiKey, '[redacted]')
  return {
    name: 'http',
    async send(email, { idempotencyKey }) {
      const response = await post(endpoints.single, { ...email, to: [email.to] }, idempotencyKey)
      if (!response.ok) throw new Error(`HTTP ${response.status} from the mail provider: ${await excerpt(response)}`)
    },
    async sendBatch(emails, { idempotencyKey }) {
      let response: Response
      try {
        response = await post(
          endpoints.batch,
          emails.map((email) => ({ ...email, to: [email.to] })),
          idempotencyKey,
        )
      } catch (err) {
        const reason = err instanceof Error ? err.name : 'unknown'
        return { outcome: 'retry', retryAfterSeconds: undefined, error: `network error (${reason})` }
      }
      if (response.ok) {
        await response.body?.cancel()
        return { outcome: 'accepted' }
      }
      const error = `HTTP ${response.status} from the mail provider: ${await excerpt(response)}`
      if (response.status === 429 || response.status >= 500) {
        return { outcome: 'retry', retryAfterSeconds: retryAfterSeconds(response.headers.get('retry-after')), error }
      }
      return { outcome: 'rejected', error }
    },
  }
}

/** Retry-After as seconds (RFC 9110: a number of seconds or an HTTP date), capped at an hour. */
export function retryAfterSeconds(header: string | null, now = Date.now()): number | undefined {
  if (header === null) return undefined
  const seconds = /^\d+$/.test(header.trim()) ? Number(header.trim()) : (Date.parse(header) - now) / 1000
  if (!Number.isFinite(seconds)) return undefined
  return Math.min(3600, Math.max(0, Math.ceil(seconds)))
}

/**
 * The transport MAIL_TRANSPORT names: `console` (the default) or `http`/`resend`; undefined when
 * the console transport is refused (see assertMailConfigured), so nothing is delivered.
 * `requestUrl`: the request that queues or delivers the mail; the cron has none.
 */
export function transportFor(config: Config, requestUrl?: string): MailTransport | undefined {
  if (!consoleAllowed(config, requestUrl)) return undefined
  // getConfig() already refused an http transport without MAIL_API_KEY.
  return config.mail.transport === 'console'
    ? consoleTransport
    : httpTransport({ single: config.mail.apiUrl, batch: config.mail.batchUrl }, config.mail.apiKey ?? '')
}

/**
 * Refuses to queue an email nobody may deliver: 500 naming MAIL_TRANSPORT, before any write. The
 * console transport writes every message, reset and verification links included, to the log:
 * right for a worker run on this machine or a test host, never for a deployed one. So it is used
 * only when both PUBLIC_BASE_URL and the request are local (a loopback or reserved test host; for
 * PUBLIC_BASE_URL also any http:// one): a deployment left on the default
 * http://localhost:8787 still answers its real hostname, and refuses to log tokens.
 */
export function assertMailConfigured(config: Config, requestUrl?: string): void {
  if (consoleAllowed(config, requestUrl)) return
  throw new ApiError(
    500,
    'internal_error',
    'Server misconfigured: email is not set up. MAIL_TRANSPORT is console, which prints every link (tokens ' +
      'included) to the log and is only for a worker on this machine or a test host: set MAIL_TRANSPORT=http with ' +
      'MAIL_API_KEY and MAIL_FROM, and PUBLIC_BASE_URL to the address of the app.',
  )
}

// RFC 6761 reserved names: nothing under them is a deployment.
const RESERVED_TLDS = new Set(['localhost', 'test', 'example', 'invalid'])

/** A loopback address or a name under a reserved test domain. */
function isLocalHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, '')
  if (host === '::1' || /^127(\.\d{1,3}){3}$/.test(host)) return true
  return RESERVED_TLDS.has(host.split('.').at(-1) ?? '')
}

function consoleAllowed(config: Config, requestUrl: string | undefined): boolean {
  if (config.mail.transport !== 'console') return true
  const base = new URL(config.publicBaseUrl)
  const baseIsLocal = base.protocol === 'http:' || isLocalHost(base.hostname)
  return baseIsLocal && (requestUrl === undefined || isLocalHost(new URL(requestUrl).hostname))
}
