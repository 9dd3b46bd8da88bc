// Starts what the browser tests need, once for the whole run:
// - the API under `wrangler dev` (Workers Static Assets included, so /docs is the real page), on a
//   free port, with its own local D1/KV state in a fresh temp dir;
// - a tiny "web app" on http://localhost:<appPort> (an allowed CORS origin: same site as the API,
//   another origin) and a "foreign" page on http://127.0.0.1:<otherPort> (another site).
// Everything listens on loopback only. Teardown stops wrangler by its process group and removes
// the temp dir (KEEP_BROWSER_TMP=1 keeps it: screenshots, wrangler.log).
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'

declare module 'vitest' {
  export interface ProvidedContext {
    /** http://localhost:<apiPort>: the API and /docs under wrangler dev. */
    apiUrl: string
    /** http://localhost:<appPort>: a page of the allowed web app (in CORS_ORIGINS). */
    appUrl: string
    /** http://127.0.0.1:<otherPort>: a page of another site (not in CORS_ORIGINS). */
    otherUrl: string
    /** The run's temp dir (screenshots, wrangler's log, local state); removed at teardown. */
    tmpDir: string
    /** Where wrangler dev writes its output. */
    wranglerLog: string
  }
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const wranglerBin = join(root, 'node_modules', '.bin', 'wrangler')
const LOOPBACK = '127.0.0.1'
const READY_TIMEOUT_MS = 90_000

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const tmpDir = mkdtempSync(join(tmpdir(), 'edgepress-browser-'))
  const stateDir = join(tmpDir, 'state')
  const wranglerLog = join(tmpDir, 'wrangler.log')
  const env = { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true', NO_COLOR: '1' }

  let wrangler: ChildProcess | undefined
  const servers: Server[] = []
  const teardown = async (): Promise<void> => {
    await Promise.all(servers.map((server) => closeServer(server)))
    if (wrangler !== undefined) await stopProcessGroup(wrangler)
    if (process.env.KEEP_BROWSER_TMP === '1') console.log(`browser tests: kept ${tmpDir}`)
    else rmSync(tmpDir, { recursive: true, force: true })
  }

  try {
    run(process.execPath, [join(root, 'scripts', 'docs-assets.mjs')], env)
    if (!existsSync(join(root, 'public', 'docs-assets', 'vendor', 'swagger-ui-bundle.js'))) {
      throw new Error('public/docs-assets/vendor/swagger-ui-bundle.js is missing (is swagger-ui-dist installed?)')
    }
    run(wranglerBin, ['d1', 'migrations', 'apply', 'DB', '--local', '--persist-to', stateDir], env)

    const [apiPort, appPort, otherPort, inspectorPort] = (await freePorts(4)) as [number, number, number, number]
    const apiUrl = `http://localhost:${apiPort}`
    const appUrl = `http://localhost:${appPort}`
    const otherUrl = `http://${LOOPBACK}:${otherPort}`

    servers.push(await listen(appServer(apiUrl, 'edgepress test app'), appPort))
    servers.push(await listen(appServer(apiUrl, 'another site'), otherPort))

    // An env file of our own makes wrangler skip the developer's .dev.vars / .env.
    const envFile = join(tmpDir, 'browser.env')
    writeFileSync(envFile, '# the browser tests pass their variables with --var\n')
    const logFd = openSync(wranglerLog, 'a')
    wrangler = spawn(
      wranglerBin,
      [
        'dev',
        // As `npm run dev` starts it: GET /__scheduled runs the cron (test/browser/dev-server.test.ts).
        '--test-scheduled',
        '--ip',
        LOOPBACK,
        '--port',
        String(apiPort),
        '--inspector-port',
        String(inspectorPort),
        '--persist-to',
        stateDir,
        '--env-file',
        envFile,
        '--var',
        `JWT_SECRET:${randomBytes(36).toString('base64url')}`, // 48 characters
        '--var',
        `CORS_ORIGINS:${appUrl}`,
        '--var',
        'LOG_REQUESTS:false',
        '--var',
        `MFA_ENCRYPTION_KEY:${randomBytes(36).toString('base64url')}`,
        '--var',
        `PUBLIC_BASE_URL:${apiUrl}`,
        // Passkeys are made on the app's page: the RP id stays localhost (PUBLIC_BASE_URL's host).
        '--var',
        `WEBAUTHN_ORIGINS:${appUrl}`,
      ],
      { cwd: root, env, detached: true, stdio: ['ignore', logFd, logFd] },
    )
    closeSync(logFd)
    await waitUntilHealthy(`${apiUrl}/api/v1/health`, wrangler, wranglerLog)

    project.provide('apiUrl', apiUrl)
    project.provide('appUrl', appUrl)
    project.provide('otherUrl', otherUrl)
    project.provide('tmpDir', tmpDir)
    project.provide('wranglerLog', wranglerLog)
  } catch (err) {
    await teardown()
    throw err
  }
  return teardown
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv): void {
  const result = spawnSync(bin, args, { cwd: root, env, encoding: 'utf8', timeout: 120_000 })
  if (result.status !== 0) {
    throw new Error(`${bin} ${args.join(' ')} failed (exit ${result.status}):\n${result.stdout}\n${result.stderr}`)
  }
}

/** Ports the kernel hands out for listen(0), all held at once so they differ. */
async function freePorts(count: number): Promise<number[]> {
  const held = await Promise.all(
    Array.from({ length: count }, () => {
      return new Promise<ReturnType<typeof createNetServer>>((resolve, reject) => {
        const server = createNetServer()
        server.once('error', reject)
        server.listen(0, LOOPBACK, () => resolve(server))
      })
    }),
  )
  const ports = held.map((server) => {
    const address = server.address()
    if (address === null || typeof address === 'string') throw new Error('no port')
    return address.port
  })
  await Promise.all(held.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

/**
 * A page whose scripts the tests drive with page.evaluate; `/form` holds a classic HTML form that
 * posts to the API (the cross-site request forgery a browser allows without CORS).
 */
function appServer(apiUrl: string, title: string): Server {
  return createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (req.method !== 'GET' || (path !== '/' && path !== '/form')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found')
      return
    }
    const form =
      path === '/form'
        ? `<form id="forged" method="POST" action="${apiUrl}/api/v1/posts">` +
          '<input name="title" value="forged post"><input name="body" value="written by another site">' +
          '<button type="submit">Send</button></form>'
        : ''
    res
      .writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' })
      .end(
        `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>` +
          `<body><h1>${title}</h1>${form}</body></html>`,
      )
  })
}

function listen(server: Server, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, LOOPBACK, () => resolve(server))
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })
}

async function waitUntilHealthy(url: string, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  let last = 'no answer yet'
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `wrangler dev exited (${child.exitCode ?? child.signalCode}) before ${url} answered:\n${tail(log)}`,
      )
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(3_000) })
      if (res.status === 200) return
      last = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`
    } catch (err) {
      last = String(err)
    }
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  throw new Error(`${url} did not answer 200 within ${READY_TIMEOUT_MS / 1000} s (last: ${last}):\n${tail(log)}`)
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-60).join('\n')
  } catch {
    return '(no log)'
  }
}

/** SIGTERM to wrangler's whole process group (wrangler and its workerd children), then SIGKILL. */
async function stopProcessGroup(child: ChildProcess): Promise<void> {
  const pid = child.pid
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const signalGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-pid, signal)
    } catch {
      // already gone
    }
  }
  signalGroup('SIGTERM')
  await Promise.race([exited, sleep(5_000)])
  // workerd children may outlive wrangler by a moment: wait for the group to empty, then SIGKILL.
  for (let i = 0; i < 20 && groupAlive(pid); i++) await sleep(100)
  if (groupAlive(pid)) signalGroup('SIGKILL')
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
