import type { Context } from 'hono'
import type { SessionDevice, Sighting } from '../db/sessions'
import { deviceLabel } from '../lib/device-label'

// What a session records of the device behind a request: a label derived from the User-Agent and
// where Cloudflare received the request (request.cf). Never the raw User-Agent, never an IP.

const COUNTRY = /^[A-Z]{2}$/
const COLO = /^[A-Z]{3}$/

// Cloudflare's "no country information"; T1 (Tor) fails the two-letter shape and is dropped too.
const NO_COUNTRY = 'XX'

function codeOf(value: unknown, shape: RegExp): string | null {
  return typeof value === 'string' && shape.test(value) ? value : null
}

/** The country and Cloudflare location of a request; null for each that is absent (locally) or malformed. */
export function sightingOf(c: Context): Sighting {
  const cf = c.req.raw.cf as Record<string, unknown> | undefined
  const country = codeOf(cf?.country, COUNTRY)
  return { country: country === NO_COUNTRY ? null : country, colo: codeOf(cf?.colo, COLO) }
}

/** The device a login or password change starts its session on. */
export function deviceOf(c: Context): SessionDevice {
  return { label: deviceLabel(c.req.header('user-agent')), ...sightingOf(c) }
}
