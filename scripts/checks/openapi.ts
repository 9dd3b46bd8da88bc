// `npm run openapi`: writes the served OpenAPI document to dist/openapi.json (by calling the app
// in Node, no server needed), lints it with Redocly's recommended rules, and generates TypeScript
// types from it with openapi-typescript, proving a third-party tool can consume it.
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { servedOpenApiDocument } from '../openapi-document'
import { root } from '../project-root'

const out = join(root, 'dist')
mkdirSync(out, { recursive: true })

const document = await servedOpenApiDocument()
const documentPath = join(out, 'openapi.json')
writeFileSync(documentPath, JSON.stringify(document, null, 2))
console.log(`wrote ${documentPath}`)

run('redocly', ['lint', '--extends=recommended', '--format=stylish', documentPath])
run('openapi-typescript', [documentPath, '--output', join(out, 'openapi.d.ts')])
run('tsc', ['--noEmit', '--strict', '--skipLibCheck', 'false', join(out, 'openapi.d.ts')])

function run(bin: string, args: string[]): void {
  const result = spawnSync(join(root, 'node_modules', '.bin', bin), args, {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
  })
  if (result.status !== 0) process.exit(result.status ?? 1)
}
