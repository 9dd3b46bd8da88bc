// The keys of wrangler.toml that the scripts which serve the built Worker with the Miniflare API
// (bench, capacity) need, read without a TOML library.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { root } from './d1'

export interface WorkerConfig {
  compatibilityDate: string
  compatibilityFlags: string[]
  vars: Record<string, string>
  rateLimits: string[]
  /** The first D1 database's id (a placeholder locally). */
  databaseId: string
}

export function readWranglerToml(): WorkerConfig {
  const text = readFileSync(join(root, 'wrangler.toml'), 'utf8')
  const config: WorkerConfig = { compatibilityDate: '', compatibilityFlags: [], vars: {}, rateLimits: [], databaseId: '' }
  let section = ''
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim()
    if (line === '' || line.startsWith('#')) continue
    const header = /^\[\[?([^\]]+)\]\]?$/.exec(line)
    if (header) {
      section = header[1] ?? ''
      continue
    }
    const pair = /^([A-Za-z0-9_]+)\s*=\s*(.+)$/.exec(line)
    if (!pair) continue
    const [, key = '', value = ''] = pair
    const string = /^"((?:[^"\\]|\\.)*)"/.exec(value)?.[1]
    if (section === '' && key === 'compatibility_date' && string !== undefined) config.compatibilityDate = string
    if (section === '' && key === 'compatibility_flags') config.compatibilityFlags = [...value.matchAll(/"([^"]*)"/g)].map((m) => m[1] ?? '')
    if (section === 'vars' && string !== undefined) config.vars[key] = JSON.parse(`"${string}"`) as string
    if (section === 'ratelimits' && key === 'name' && string !== undefined) config.rateLimits.push(string)
    if (section === 'd1_databases' && key === 'database_id' && string !== undefined && config.databaseId === '') config.databaseId = string
  }
  if (config.compatibilityDate === '' || config.databaseId === '') throw new Error('wrangler.toml has no compatibility_date or D1 database_id')
  return config
}
