#!/usr/bin/env node
// Copies Swagger UI's browser build from node_modules into public/docs-assets/vendor, so /docs is
// served entirely by this Worker (Workers Static Assets): no CDN, works offline. Runs on
// `npm install` (postinstall) and before `npm run dev`; the copy is not committed.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const source = join(root, 'node_modules', 'swagger-ui-dist')
const target = join(root, 'public', 'docs-assets', 'vendor')

if (!existsSync(source)) {
  console.warn('edgepress: swagger-ui-dist is not installed; /docs will have no assets')
  process.exit(0)
}
mkdirSync(target, { recursive: true })
for (const file of ['swagger-ui-bundle.js', 'swagger-ui.css']) copyFileSync(join(source, file), join(target, file))
