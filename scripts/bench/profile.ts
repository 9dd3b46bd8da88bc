// `npm run bench:profile`: where the CPU of one kind of request goes, function by function.
//
// Serves the Worker as `npm run bench` does (scripts/bench/serve.ts), but unminified so that the
// profile names functions, with V8's inspector open; signs a user in, then records a CPU profile
// (DevTools protocol, 50 µs sampling) over REQUESTS requests of PATH, CONCURRENCY at a time, after
// a warm-up. Prints the busy time per request and the top functions by self and by total time,
// and writes the .cpuprofile (open it in Chrome DevTools → Performance) and a JSON summary to
// bench-results/.
//
// Options:
//   --path P         the request's path (default /api/v1/users/me), sent with the access token
//   --requests N     profiled requests (default 2000)
//   --concurrency C  requests in flight at once (default 10)
//   --top K          rows per table (default 20)
//   --floor          profile the floor worker of `npm run bench` instead (scripts/bench/floor-worker.ts)
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sampleDurations } from '../checks/cpu-profile'
import type { CpuProfile, ProfileNode } from '../checks/cpu-profile'
import { copyUser, login, registerUser } from './fixtures'
import { positiveNumber } from './flags'
import { printTable, resultsDir, writeResults } from './report'
import { log, serveWorker } from './serve'

const { values: flags } = parseArgs({
  options: {
    path: { type: 'string' },
    requests: { type: 'string' },
    concurrency: { type: 'string' },
    top: { type: 'string' },
    floor: { type: 'boolean', default: false },
  },
})
const PATH = flags.path ?? '/api/v1/users/me'
const REQUESTS = positiveNumber('bench:profile', { name: '--requests', raw: flags.requests, fallback: 2000 })
const CONCURRENCY = positiveNumber('bench:profile', { name: '--concurrency', raw: flags.concurrency, fallback: 10 })
const TOP = positiveNumber('bench:profile', { name: '--top', raw: flags.top, fallback: 20 })
const INSPECTOR_PORT = 9230 + Math.floor(Math.random() * 500)

/** A DevTools protocol session over the inspector's WebSocket. */
async function inspect(url: string) {
  const socket = new WebSocket(url)
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true })
    socket.addEventListener('error', () => reject(new Error(`cannot open ${url}`)), { once: true })
  })
  let nextId = 1
  const waiting = new Map<number, (result: unknown) => void>()
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown; error?: unknown }
    if (message.id === undefined) return
    waiting.get(message.id)?.(message.error === undefined ? message.result : { error: message.error })
    waiting.delete(message.id)
  })
  return {
    send<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
      const id = nextId++
      socket.send(JSON.stringify({ id, method, params }))
      return new Promise((resolve) => waiting.set(id, resolve as (result: unknown) => void))
    },
    close: () => socket.close(),
  }
}

/** The inspector target of the Worker (Miniflare lists one per worker, plus its own internals). */
async function workerTarget(port: number): Promise<string> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json`)).json()) as Array<{
    title?: string
    webSocketDebuggerUrl: string
  }>
  // Miniflare names the user's worker `core:user:<name>`; the others are its bindings' simulators.
  const target = targets.find((t) => t.title?.includes('core:user:'))
  if (target === undefined) throw new Error(`no inspector target: ${JSON.stringify(targets)}`)
  return target.webSocketDebuggerUrl
}

async function fire(base: string, token: string, count: number): Promise<void> {
  let left = count
  const worker = async (): Promise<void> => {
    while (left > 0) {
      left -= 1
      const response = await fetch(`${base}${PATH}`, { headers: { authorization: `Bearer ${token}` } })
      await response.arrayBuffer()
      if (response.status >= 400) throw new Error(`${PATH}: ${response.status}`)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
}

interface FunctionTime {
  name: string
  where: string
  selfMs: number
  totalMs: number
}

const IDLE = new Set(['(idle)', '(program)', '(garbage collector)'])

/**
 * The source module of each line of the unminified bundle: esbuild heads every module with a
 * `// path/to/module.js` comment. Lines map to a package (`hono`, `drizzle-orm`, …) or to `src/…`.
 */
function modulesOfBundle(scriptPath: string): (line: number) => string {
  const starts: Array<{ line: number; module: string }> = []
  readFileSync(scriptPath, 'utf8')
    .split('\n')
    .forEach((text, index) => {
      const match = /^\/\/ (\S+\.[cm]?[jt]s)$/.exec(text)
      if (match?.[1] !== undefined) starts.push({ line: index + 1, module: packageOf(match[1]) })
    })
  return (line) => {
    let low = 0
    let high = starts.length - 1
    let found = 'bundle'
    while (low <= high) {
      const middle = (low + high) >>> 1
      const start = starts[middle]
      if (start !== undefined && start.line <= line) {
        found = start.module
        low = middle + 1
      } else high = middle - 1
    }
    return found
  }
}

function packageOf(path: string): string {
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)
  if (inModules?.[1] !== undefined) return inModules[1]
  return path.replace(/^(\.\.\/)+/, '').replace(/\/[^/]+$/, '/')
}

/** Self time per module of the bundle (runtime internals and native calls by their own names). */
function moduleTimes(
  profile: CpuProfile,
  moduleOf: (line: number) => string,
): Array<{ module: string; selfMs: number }> {
  const byId = new Map<number, ProfileNode>(profile.nodes.map((node) => [node.id, node]))
  const totals = new Map<string, number>()
  for (const { nodeId, micros } of sampleDurations(profile)) {
    const frame = byId.get(nodeId)?.callFrame
    if (frame === undefined || IDLE.has(frame.functionName)) continue
    const module =
      frame.url === ''
        ? '(native calls)'
        : frame.url.startsWith('cloudflare-internal:')
          ? 'workerd bindings (d1-api, …)'
          : moduleOf(frame.lineNumber + 1)
    totals.set(module, (totals.get(module) ?? 0) + micros)
  }
  return [...totals].map(([module, micros]) => ({ module, selfMs: micros / 1000 })).sort((a, b) => b.selfMs - a.selfMs)
}

/** Self and total (inclusive, each function once per stack) time per function. */
function functionTimes(
  profile: CpuProfile,
  moduleOf: (line: number) => string,
): { busyMs: number; idleMs: number; functions: FunctionTime[] } {
  const byId = new Map<number, ProfileNode>(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const keyOf = ({ callFrame }: ProfileNode): string => {
    const file = callFrame.url.replace(/^.*\//, '')
    const line = callFrame.lineNumber + 1
    const module = callFrame.url === '' || callFrame.url.startsWith('cloudflare-internal:') ? '' : `${moduleOf(line)} `
    return `${callFrame.functionName || '(anonymous)'}\u0000${module}${file}:${line}`
  }
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  let busy = 0
  let idle = 0
  for (const { nodeId, micros } of sampleDurations(profile)) {
    const node = byId.get(nodeId)
    if (node === undefined) continue
    const name = node.callFrame.functionName
    if (IDLE.has(name) && name !== '(garbage collector)') {
      idle += micros
      continue
    }
    busy += micros
    self.set(keyOf(node), (self.get(keyOf(node)) ?? 0) + micros)
    const seen = new Set<string>()
    for (let at: number | undefined = nodeId; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)
      if (frame === undefined || frame.callFrame.functionName === '(root)') continue
      const key = keyOf(frame)
      if (seen.has(key)) continue
      seen.add(key)
      total.set(key, (total.get(key) ?? 0) + micros)
    }
  }
  const functions = [...total.keys()].map((key) => {
    const [name = '', where = ''] = key.split('\u0000')
    return { name, where, selfMs: (self.get(key) ?? 0) / 1000, totalMs: (total.get(key) ?? 0) / 1000 }
  })
  return { busyMs: busy / 1000, idleMs: idle / 1000, functions }
}

function printTop(title: string, rows: FunctionTime[], pick: (row: FunctionTime) => number, busyMs: number): void {
  console.log(`\n${title}`)
  printTable(
    ['function', 'where', 'ms', '% of busy', 'µs per request'],
    rows.map((row) => [
      row.name,
      row.where,
      pick(row).toFixed(1),
      ((100 * pick(row)) / busyMs).toFixed(1),
      ((1000 * pick(row)) / REQUESTS).toFixed(1),
    ]),
  )
}

/** Records the profile of REQUESTS requests at `target` (after a warm-up). */
async function record(target: { base: string }, token: string, inspectorPort: number): Promise<CpuProfile> {
  await fire(target.base, token, 500)
  const inspector = await inspect(await workerTarget(inspectorPort))
  await inspector.send('Profiler.enable')
  await inspector.send('Profiler.setSamplingInterval', { interval: 50 })
  await inspector.send('Profiler.start')
  log(`profiling ${REQUESTS} × GET ${PATH}, ${CONCURRENCY} at a time`)
  await fire(target.base, token, REQUESTS)
  const { profile } = await inspector.send<{ profile: CpuProfile }>('Profiler.stop')
  inspector.close()
  return profile
}

/** Prints the tables and writes the .cpuprofile and the JSON summary. */
function report(profile: CpuProfile, scriptPath: string, worker: 'app' | 'floor'): void {
  const moduleOf = modulesOfBundle(scriptPath)
  const { busyMs, idleMs, functions } = functionTimes(profile, moduleOf)
  console.log(
    `\nbusy ${busyMs.toFixed(0)} ms over ${REQUESTS} requests: ${((1000 * busyMs) / REQUESTS).toFixed(0)} µs of CPU per request in the worker's isolate (idle ${idleMs.toFixed(0)} ms)`,
  )
  const bySelf = [...functions].sort((a, b) => b.selfMs - a.selfMs).slice(0, TOP)
  const byTotal = [...functions].sort((a, b) => b.totalMs - a.totalMs).slice(0, TOP)
  printTop('top functions by self time', bySelf, (row) => row.selfMs, busyMs)
  printTop('top functions by total time (the function and what it calls)', byTotal, (row) => row.totalMs, busyMs)
  const modules = moduleTimes(profile, moduleOf)
  console.log('\nself time by module')
  printTable(
    ['module', 'ms', '% of busy', 'µs per request'],
    modules
      .slice(0, TOP)
      .map((row) => [
        row.module,
        row.selfMs.toFixed(1),
        ((100 * row.selfMs) / busyMs).toFixed(1),
        ((1000 * row.selfMs) / REQUESTS).toFixed(1),
      ]),
  )
  const date = new Date().toISOString()
  const cpuprofile = join(resultsDir, `profile-${date.replace(/[:.]/g, '-')}.cpuprofile`)
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(cpuprofile, JSON.stringify(profile))
  log(`DevTools profile: ${cpuprofile}`)
  writeResults('profile-', date, {
    date,
    path: PATH,
    worker,
    requests: REQUESTS,
    concurrency: CONCURRENCY,
    busyMs,
    busyMicrosPerRequest: (1000 * busyMs) / REQUESTS,
    bySelf,
    byTotal,
    modules,
  })
}

async function main(): Promise<void> {
  const workDir = mkdtempSync(join(tmpdir(), 'edgepress-profile-'))
  // One secret for both, so one access token verifies at each.
  const vars = { JWT_SECRET: randomBytes(48).toString('base64url') }
  const served = await serveWorker({ workDir, minify: false, inspectorPort: INSPECTOR_PORT, vars })
  const floor =
    flags.floor === true
      ? await serveWorker({
          workDir: join(workDir, 'floor'),
          entry: 'scripts/bench/floor-worker.ts',
          minify: false,
          inspectorPort: INSPECTOR_PORT + 1,
          vars,
        })
      : undefined
  try {
    const { credentials, userId } = await registerUser(served.base, served.db, 'profile')
    const { access_token: token } = await login(served.base, credentials)
    if (floor !== undefined) await copyUser(served.db, floor.db, userId)
    const target = floor ?? served
    const profile = await record(target, token, floor === undefined ? INSPECTOR_PORT : INSPECTOR_PORT + 1)
    report(profile, target.scriptPath, floor === undefined ? 'app' : 'floor')
  } finally {
    await Promise.all([served.dispose(), floor?.dispose()])
    rmSync(workDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error('bench:profile: failed:', err instanceof Error ? (err.stack ?? err.message) : err)
  process.exit(1)
})
