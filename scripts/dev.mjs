#!/usr/bin/env node
// `npm run dev`: create .dev.vars with a random JWT_SECRET and MFA_ENCRYPTION_KEY when missing,
// apply the local D1 migrations, then start `wrangler dev --test-scheduled`.
// Extra arguments go to wrangler dev
// (e.g. `npm run dev -- --port 8788 --var JWT_ISSUER:https://auth.example`).
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const devVars = join(root, '.dev.vars')
const wrangler = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'wrangler.cmd' : 'wrangler')
const env = { ...process.env, WRANGLER_SEND_METRICS: process.env.WRANGLER_SEND_METRICS ?? 'false' }

ensureDevSecret()
run(['node', join(root, 'scripts', 'docs-assets.mjs')], 'copying the /docs assets')
run([wrangler, 'd1', 'migrations', 'apply', 'DB', '--local'], 'applying local D1 migrations')

// --test-scheduled serves GET /__scheduled, which runs the cron (delivery retries, pruning, due
// newsletters) on demand: `curl http://localhost:8787/__scheduled`. Wrangler's own hint,
// /cdn-cgi/handler/scheduled, does not reach a worker that serves static assets.
const extra = process.argv.slice(2)
const flags = extra.includes('--test-scheduled') ? extra : ['--test-scheduled', ...extra]
const dev = spawn(wrangler, ['dev', ...flags], { cwd: root, env, stdio: 'inherit' })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => dev.kill(signal))
dev.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))

function ensureDevSecret() {
  ensureRandomVar('JWT_SECRET', 'a random JWT_SECRET')
  ensureRandomVar('MFA_ENCRYPTION_KEY', 'a random MFA_ENCRYPTION_KEY (seals TOTP secrets)')
}

/** Writes NAME=<48 random bytes> to .dev.vars unless it holds a value of at least 32 characters. */
function ensureRandomVar(name, what) {
  const current = existsSync(devVars) ? readFileSync(devVars, 'utf8') : ''
  if (new RegExp(`^${name}\\s*=\\s*\\S{32,}`, 'm').test(current)) return
  const value = randomBytes(48).toString('base64url')
  const withoutOld = current.replace(new RegExp(`^${name}\\s*=.*\\n?`, 'm'), '')
  const separator = withoutOld === '' || withoutOld.endsWith('\n') ? '' : '\n'
  writeFileSync(devVars, `${withoutOld}${separator}${name}=${value}\n`, { mode: 0o600 })
  console.log(`edgepress: wrote ${what} to .dev.vars (local only; never commit it)`)
}

function run(command, what) {
  console.log(`edgepress: ${what}`)
  const [bin, ...args] = command
  const result = spawnSync(bin, args, { cwd: root, env: { ...env, CI: 'true' }, stdio: 'inherit' })
  if (result.status !== 0) {
    console.error(`edgepress: ${what} failed (exit ${result.status})`)
    process.exit(result.status ?? 1)
  }
}
