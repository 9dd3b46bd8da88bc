// Launches Debian's chromium (never a downloaded browser) with flags that keep it off the network.
import { existsSync, readFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import type { Browser } from 'playwright-core'
import { afterEach } from 'vitest'

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

export function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `${CHROMIUM_PATH} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does`,
    )
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    // playwright-core uses a fresh temporary profile (user-data-dir) per launch.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 60_000,
  })
}

/** True for URLs that stay on the loopback host (or never touch the network at all). */
export function isLocalUrl(url: string): boolean {
  const { protocol, hostname } = new URL(url)
  if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true
  return hostname === 'localhost' || hostname === '127.0.0.1' || hostname === '[::1]'
}

/** After a failed test, prints the end of wrangler dev's log (the API's side of the story). */
export function printServerLogOnFailure(wranglerLog: string): void {
  afterEach(({ task }) => {
    if (task.result?.state !== 'fail') return
    let log = '(no log)'
    try {
      log = readFileSync(wranglerLog, 'utf8').split('\n').slice(-40).join('\n')
    } catch {
      // keep the placeholder
    }
    console.error(`--- wrangler dev log (${wranglerLog}), last lines ---\n${log}`)
  })
}
