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
 */
export function transportFor(config: Config): MailTransport | undefined {
  if (consoleRefused(config)) return undefined
  // getConfig() already refused an http transport without MAIL_API_KEY.
  return config.mail.transport === 'console'
    ? consoleTransport
    : httpTransport(config.mail.apiUrl, config.mail.apiKey ?? '')
}

/**
 * Refuses to queue an email nobody may deliver: 500 naming MAIL_TRANSPORT, before any write. The
 * console transport writes every message, reset and verification links included, to the log:
 * right for local runs and test hosts (an http:// PUBLIC_BASE_URL, any host), never for a deployed
 * worker, whose PUBLIC_BASE_URL is https://. Such a worker refuses to mail rather than log tokens.
 */
export function assertMailConfigured(config: Config): void {
  if (!consoleRefused(config)) return
  throw new ApiError(
    500,
    'internal_error',
    'Server misconfigured: email is not set up. PUBLIC_BASE_URL is https://, where the console transport ' +
      '(which prints every link, tokens included, to the log) is refused: set MAIL_TRANSPORT=http with MAIL_API_KEY and MAIL_FROM.',
  )
}

const LOOPBACK = /^https:\/\/(localhost|127\.0\.0\.1|\[::1\])(:|\/|$)/

function consoleRefused(config: Config): boolean {
  return (
    config.mail.transport === 'console' &&
    config.publicBaseUrl.startsWith('https://') &&
    !LOOPBACK.test(config.publicBaseUrl)
  )
}
