// The short, human label of a session's device ("Firefox on macOS"), derived from the login's
// User-Agent. Only the label is stored: the raw header is a fingerprint, and the label is all
// a person needs to tell their phone from their laptop. Every label comes from the fixed names
// below, so nothing the client wrote ends up in the database.

export const UNKNOWN_DEVICE = 'Unknown device'

/** Labels are at most this long (the longest one built here is well under it). */
export const DEVICE_LABEL_MAX_LENGTH = 40

// Only the start of the header is read: real User-Agents are a few hundred characters at most,
// and the patterns below then run on a bounded input whatever a client sends.
const READ_AT_MOST = 512

/** Programs that are not browsers, tested first (in order): the first match is the label. */
const CLIENTS: [RegExp, string][] = [
  [/^curl\//i, 'curl'],
  [/^Wget\//i, 'Wget'],
  [/^HTTPie\//i, 'HTTPie'],
  [/^PostmanRuntime\//i, 'Postman'],
  [/\bokhttp\//i, 'Android app'],
  [/^Dalvik\//, 'Android app'],
  [/\bAlamofire\//, 'App on iOS'],
  [/^Dart\//, 'Dart app'],
  [/^python-(requests|httpx|urllib)\/|\baiohttp\//i, 'Python script'],
  [/^Go-http-client\//, 'Go program'],
  [/^(node-fetch|undici|axios|node)\b/i, 'Node.js script'],
]

/** Browsers, most specific first: Edge, Opera and Samsung Internet also say "Chrome" and "Safari". */
const BROWSERS: [RegExp, string][] = [
  [/\bSamsungBrowser\//, 'Samsung Internet'],
  [/\bEdg(e|A|iOS)?\//, 'Edge'],
  [/\b(OPR|OPX|OPT)\/|\bOpera\b/, 'Opera'],
  [/\b(Firefox|FxiOS)\//, 'Firefox'],
  [/\b(Chrome|CriOS|Chromium)\//, 'Chrome'],
  [/\bVersion\/[\d.]+.*\bSafari\//, 'Safari'],
]

/** Systems, most specific first: iPhones say "like Mac OS X", Android and ChromeOS say "Linux". */
const SYSTEMS: [RegExp, string][] = [
  [/\biPad\b/, 'iPadOS'],
  [/\b(iPhone|iPod)\b/, 'iOS'],
  [/\bAndroid\b/, 'Android'],
  [/\bCrOS\b/, 'ChromeOS'],
  [/\bWindows\b/, 'Windows'],
  [/\b(Macintosh|Mac OS X)\b/, 'macOS'],
  [/\b(Linux|X11)\b/, 'Linux'],
]

function firstMatch(table: [RegExp, string][], text: string): string | undefined {
  return table.find(([pattern]) => pattern.test(text))?.[1]
}

/**
 * "<Browser> on <OS>" for common browsers, "App on iOS", "Android app", "curl" and the like for
 * other clients, "<OS> device" when only the system is known, else "Unknown device".
 */
export function deviceLabel(userAgent: string | null | undefined): string {
  const text = (userAgent ?? '').slice(0, READ_AT_MOST)
  if (text.trim() === '') return UNKNOWN_DEVICE
  const client = firstMatch(CLIENTS, text)
  if (client !== undefined) return client
  // Apple's networking stack: "<App>/1.0 CFNetwork/1410 Darwin/22.4.0"; macOS adds the machine.
  if (/\bCFNetwork\//.test(text))
    return /\bDarwin\/[\d.]+ \((x86_64|arm64)\)/.test(text) ? 'App on macOS' : 'App on iOS'
  const browser = firstMatch(BROWSERS, text)
  const system = firstMatch(SYSTEMS, text)
  const label =
    browser !== undefined && system !== undefined
      ? `${browser} on ${system}`
      : (browser ?? (system === undefined ? UNKNOWN_DEVICE : `${system} device`))
  return label.slice(0, DEVICE_LABEL_MAX_LENGTH)
}
