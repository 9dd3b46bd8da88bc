// Runs SQL against the D1 database through wrangler, locally (default) or remotely.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { root } from './project-root'
import { runWrangler } from './wrangler'

export type Target = '--local' | '--remote'

/**
 * The wrangler arguments that pick the database: `--local` may be redirected to another local
 * store with EDGEPRESS_D1_PERSIST=<dir> (`--persist-to`), so tests can run scripts against a
 * throwaway D1; unset, wrangler's default (.wrangler/state) is used.
 */
function targetArgs(target: Target): string[] {
  const persistTo = process.env.EDGEPRESS_D1_PERSIST
  return target === '--local' && persistTo ? [target, '--persist-to', persistTo] : [target]
}

/** A SQL string literal: single quotes doubled, so any text is safe inside '…'. */
export function literal(value: string | number | boolean | null): string {
  if (value === null) return 'NULL'
  if (typeof value === 'number') return String(value)
  if (typeof value === 'boolean') return value ? '1' : '0'
  return `'${value.replace(/'/g, "''")}'`
}

export function applyMigrations(target: Target): void {
  runWrangler(['d1', 'migrations', 'apply', 'DB', ...targetArgs(target)], {
    stdout: 'inherit',
    stderr: 'inherit',
    onFailure: 'exit',
  })
}

/** Executes SQL (several statements allowed) and returns the rows of the last statement. */
export function execute(sql: string, target: Target): Record<string, unknown>[] {
  const dir = mkdtempSync(join(tmpdir(), 'edgepress-'))
  const file = join(dir, 'statements.sql')
  try {
    writeFileSync(file, sql)
    const output = runWrangler(['d1', 'execute', 'DB', ...targetArgs(target), '--json', '--file', file], {
      stderr: 'inherit',
      onFailure: 'exit',
    })
    const results = JSON.parse(output) as { results?: Record<string, unknown>[] }[]
    return results[results.length - 1]?.results ?? []
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** PASSWORD_PEPPER from the environment, or for local work from .dev.vars. */
export function passwordPepper(target: Target): string | undefined {
  if (process.env.PASSWORD_PEPPER) return process.env.PASSWORD_PEPPER
  if (target === '--remote') return undefined
  try {
    const match = /^PASSWORD_PEPPER\s*=\s*"?([^"\n]+)"?\s*$/m.exec(readFileSync(join(root, '.dev.vars'), 'utf8'))
    return match?.[1]
  } catch {
    return undefined
  }
}
