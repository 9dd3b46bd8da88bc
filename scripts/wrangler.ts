// How every script reaches wrangler: its CLI through runWrangler(), its Node API through
// wranglerApi(). (`npm run dev`, plain JS in scripts/dev.mjs, keeps its own spawn of `wrangler dev`.)
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { root } from './project-root'

const bin = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'wrangler.cmd' : 'wrangler')

/** The configuration every script reads, as wrangler does. */
export const wranglerConfigPath = join(root, 'wrangler.toml')

export interface WranglerRunOptions {
  /** 'pipe' (default): captured and returned. 'inherit': shown as wrangler writes it. */
  stdout?: 'pipe' | 'inherit'
  /** 'pipe' (default): captured, and printed only if wrangler fails. 'inherit': shown as wrangler writes it. */
  stderr?: 'pipe' | 'inherit'
  /**
   * 'throw' (default): an Error, so the caller's clean-up (temporary folders, a running Miniflare)
   * still runs. 'exit': exit with wrangler's status, for a top-level step with nothing to undo.
   */
  onFailure?: 'throw' | 'exit'
}

/**
 * Runs wrangler in the repository and returns its stdout. Never interactive (CI=true: wrangler
 * takes its defaults instead of prompting), no colour, and no metrics unless the caller's
 * environment sets WRANGLER_SEND_METRICS.
 */
export function runWrangler(args: string[], options: WranglerRunOptions = {}): string {
  const { stdout = 'pipe', stderr = 'pipe', onFailure = 'throw' } = options
  const result = spawnSync(bin, args, {
    cwd: root,
    env: {
      ...process.env,
      WRANGLER_SEND_METRICS: process.env.WRANGLER_SEND_METRICS ?? 'false',
      CI: 'true',
      NO_COLOR: '1',
    },
    stdio: ['ignore', stdout, stderr],
    encoding: 'utf8',
  })
  if (result.status === 0) return result.stdout ?? ''
  const captured = [result.stdout, result.stderr].filter((text) => typeof text === 'string' && text !== '')
  if (captured.length > 0) console.error(captured.join('\n'))
  const message = `wrangler ${args.join(' ')} failed (${result.error?.message ?? `exit ${result.status}`})`
  if (onFailure === 'throw') throw new Error(message)
  console.error(message)
  process.exit(result.status ?? 1)
}

/**
 * wrangler's Node API (readConfig, getPlatformProxy, …). Loaded with require, on first use: an ESM
 * import of its 12 MB CommonJS bundle first scans the whole file for export names, which costs
 * about a second more per process (it adds up in `npm run test:scripts`, which runs scripts over
 * and over).
 */
export function wranglerApi(): typeof import('wrangler') {
  return createRequire(import.meta.url)('wrangler') as typeof import('wrangler')
}

/**
 * The parts of wrangler's Config the scripts read. (wrangler 4.86 declares Config in
 * @cloudflare/workers-utils, a package it bundles but does not ship, so its own type is `any`.)
 */
export interface WranglerConfig {
  name: string
  compatibility_date: string
  vars: Record<string, unknown>
  d1_databases: Array<{ binding: string; migrations_dir?: string; migrations_table?: string }>
  queues: { consumers?: Array<{ queue: string; max_batch_size?: number }> }
}

/** wrangler.toml as wrangler itself reads and validates it (defaults filled in). */
export function readWranglerConfig(): WranglerConfig {
  return wranglerApi().unstable_readConfig({ config: wranglerConfigPath }, { hideWarnings: true })
}
