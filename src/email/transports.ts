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
      ['--- email ---', `From: ${email.from}`, `To: ${email.to}`, `Subject: ${email.subject}`, ...headerLines, '', email.text, '--- end ---'].join('\n'),
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
 * The transport MAIL_TRANSPORT names: `console` or `http`/`resend`; undefined when it is unset
 * (nothing can be delivered; assertMailConfigured() refuses to queue).
 */
export function transportFor(config: Config): MailTransport | undefined {
  switch (config.mail.transport) {
    case 'http':
    case 'resend':
      // getConfig() already refused an http transport without MAIL_API_KEY.
      return httpTransport(config.mail.apiUrl, config.mail.apiKey ?? '')
    case 'console':
      return consoleTransport
    default:
      return undefined
  }
}

/** Refuses to queue an email nobody could deliver: 500 naming MAIL_TRANSPORT, before any write. */
export function assertMailConfigured(config: Config): void {
  if (config.mail.transport !== 'unset') return
  throw new ApiError(
    500,
    'internal_error',
    'Server misconfigured: email is not set up. Set MAIL_TRANSPORT to http (with MAIL_API_KEY and MAIL_FROM) ' +
      'in production, or to console for local development (`npm run dev` writes it to .dev.vars).',
  )
}
