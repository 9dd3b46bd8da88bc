import type { Config } from '../config'
import { ApiError } from '../lib/api-error'

export interface OutgoingEmail {
  from: string
  to: string
  subject: string
  text: string
  headers: Record<string, string>
}

/** Delivers one email or throws; the outbox records the error and retries later. */
export interface MailTransport {
  readonly name: string
  send(email: OutgoingEmail): Promise<void>
}

/**
 * Local development: prints the whole message (recipient, subject, text with its links and
 * tokens) to the log, as the contract asks (docs/API.md § Email). Never configure it in production.
 */
export const consoleTransport: MailTransport = {
  name: 'console',
  async send(email) {
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
  },
}

const SEND_TIMEOUT_MS = 20_000

/**
 * An HTTP email API in the shape Resend (and several others) accept: POST JSON
 * `{from, to, subject, text, headers}` with a bearer API key.
 */
export function httpTransport(endpoint: string, apiKey: string): MailTransport {
  return {
    name: 'http',
    async send(email) {
      const response = await fetch(endpoint, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...email, to: [email.to] }),
        // Well inside the outbox's 60 s send lease, so a slow provider cannot lead to a second send.
        signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
      })
      if (!response.ok) {
        // The provider's words help the operator; the key is cut out in case it is echoed back.
        const excerpt = (await response.text().catch(() => '')).slice(0, 200).replaceAll(apiKey, '[redacted]')
        throw new Error(`HTTP ${response.status} from the mail provider: ${excerpt}`)
      }
    },
  }
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
    : httpTransport(config.mail.apiUrl, config.mail.apiKey ?? '')
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
