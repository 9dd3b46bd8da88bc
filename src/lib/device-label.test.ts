import { describe, expect, it } from 'vitest'
import { DEVICE_LABEL_MAX_LENGTH, UNKNOWN_DEVICE, deviceLabel } from './device-label'

// Real User-Agent strings of current browsers and common HTTP clients.
const CASES: [string, string][] = [
  [
    'Chrome on Windows',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  ],
  [
    'Chrome on macOS',
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  ],
  [
    'Chrome on Linux',
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  ],
  [
    'Chrome on Android',
    'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36',
  ],
  [
    'Chrome on iOS',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1',
  ],
  [
    'Chrome on ChromeOS',
    'Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  ],
  ['Firefox on macOS', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0'],
  ['Firefox on Windows', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0'],
  ['Firefox on Linux', 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0'],
  ['Firefox on Android', 'Mozilla/5.0 (Android 14; Mobile; rv:127.0) Gecko/127.0 Firefox/127.0'],
  [
    'Firefox on iOS',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/127.0 Mobile/15E148 Safari/605.1.15',
  ],
  [
    'Safari on iOS',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  ],
  [
    'Safari on iPadOS',
    'Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  ],
  [
    'Safari on macOS',
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  ],
  [
    'Edge on Windows',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68',
  ],
  [
    'Edge on Android',
    'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36 EdgA/126.0.2592.80',
  ],
  [
    'Edge on iOS',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/126.2592.86 Mobile/15E148 Safari/605.1.15',
  ],
  [
    'Opera on Windows',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0',
  ],
  [
    'Opera on Android',
    'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36 OPR/83.0.4254.70',
  ],
  [
    'Samsung Internet on Android',
    'Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36',
  ],
  ['Android app', 'okhttp/4.12.0'],
  ['Android app', 'Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240605.024)'],
  ['App on iOS', 'MyApp/3.2 (iPhone; iOS 17.5; Scale/3.00) Alamofire/5.9.1'],
  ['App on iOS', 'MyApp/1 CFNetwork/1496.0.7 Darwin/23.5.0'],
  ['App on macOS', 'MyApp/1 CFNetwork/1496.0.7 Darwin/23.5.0 (arm64)'],
  ['Dart app', 'Dart/3.4 (dart:io)'],
  ['curl', 'curl/8.8.0'],
  ['Wget', 'Wget/1.21.4'],
  ['HTTPie', 'HTTPie/3.2.2'],
  ['Postman', 'PostmanRuntime/7.39.0'],
  ['Python script', 'python-requests/2.32.3'],
  ['Python script', 'Python/3.12 aiohttp/3.9.5'],
  ['Go program', 'Go-http-client/2.0'],
  ['Node.js script', 'node'],
  ['Node.js script', 'node-fetch/1.0 (+https://github.com/bitinn/node-fetch)'],
  ['Android device', 'Mozilla/5.0 (Linux; Android 14; Pixel 8) SomeWebView/1.0'],
  ['Windows device', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Trident/7.0'],
  [UNKNOWN_DEVICE, 'Mozilla/5.0'],
  [UNKNOWN_DEVICE, 'Googlebot-ish/2.1'],
  [UNKNOWN_DEVICE, '   '],
  [UNKNOWN_DEVICE, ''],
]

describe('deviceLabel', () => {
  it.each(CASES)('%s ← %s', (label, userAgent) => {
    expect(deviceLabel(userAgent)).toBe(label)
  })

  it('labels a missing header as an unknown device', () => {
    expect(deviceLabel(undefined)).toBe(UNKNOWN_DEVICE)
    expect(deviceLabel(null)).toBe(UNKNOWN_DEVICE)
  })

  it('never returns any of the header itself, and stays short whatever it is sent', () => {
    const hostile = [
      `curl/8 ${'x'.repeat(10_000)}`,
      `Mozilla/5.0 (${'Windows '.repeat(2_000)}) Firefox/1`,
      'Chrome/1 <script>alert(1)</script> 203.0.113.7 alice@example.com',
      `${'('.repeat(5_000)}Safari/${'9.'.repeat(5_000)}`,
      '\u0000\u202e Firefox/1 \ud800',
    ]
    const known = new Set([...CASES.map(([label]) => label), 'Firefox', 'Chrome', 'Safari'])
    for (const userAgent of hostile) {
      const label = deviceLabel(userAgent)
      expect(label.length).toBeLessThanOrEqual(DEVICE_LABEL_MAX_LENGTH)
      expect(known, label).toContain(label)
    }
  })
})
