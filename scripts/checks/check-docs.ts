// `npm run check:docs` (part of `npm test`): the documentation stands on its own.
// 1. Every relative link in README.md, CONTRIBUTING.md and docs/ resolves to a file or folder of
//    the repository (anchors and queries are ignored; http(s) and mailto links are not checked).
// 2. No tracked file points outside the repository to the workspace's shared folder, which a
//    clone does not have.
// 3. README.md stays a front page: at most README_MAX_LINES lines.
// 4. The lists kept in the docs match what they describe (scripts/checks/doc-tables.ts): the
//    endpoint tables of docs/API.md and the app's OpenAPI document, the configuration tables and
//    ConfigSchema, both ways.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { root } from '../project-root'
import { checkConfigurationGroups, checkEndpointTables, checkReadmeConfiguration } from './doc-tables'

const README_MAX_LINES = 250
// Spelled in two parts so this file does not match itself.
const OUTSIDE_FOLDER = ['..', 'shared'].join('/')

const failures: string[] = []

function markdownFiles(): string[] {
  const docs = join(root, 'docs')
  const inDocs = existsSync(docs)
    ? readdirSync(docs, { recursive: true, encoding: 'utf8' })
        .filter((name) => name.endsWith('.md'))
        .map((name) => join(docs, name))
    : []
  return [join(root, 'README.md'), join(root, 'CONTRIBUTING.md'), ...inDocs]
}

/** Link targets of a Markdown text, code blocks and code spans left out (they show syntax, not links). */
export function linkTargets(markdown: string): string[] {
  const prose = markdown.replace(/^(```|~~~)[\s\S]*?^\1/gm, '').replace(/`[^`\n]*`/g, '')
  const inline = [...prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((match) => match[1]!)
  const references = [...prose.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$/gm)].map((match) => match[1]!)
  return [...inline, ...references]
}

function checkLinks(file: string): void {
  if (!existsSync(file)) {
    failures.push(`${relative(root, file)} is missing.`)
    return
  }
  for (const target of linkTargets(readFileSync(file, 'utf8'))) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue
    const path = decodeURIComponent(target.replace(/[#?].*$/, ''))
    const resolved = resolve(dirname(file), path)
    const where = relative(root, resolved)
    if (where.startsWith('..')) failures.push(`${relative(root, file)}: "${target}" points outside the repository.`)
    else if (!existsSync(resolved))
      failures.push(`${relative(root, file)}: "${target}" does not resolve to a file of the repository.`)
  }
}

function checkNoOutsideReferences(): void {
  const listed = spawnSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' })
  if (listed.status !== 0) {
    failures.push(`git ls-files failed: ${listed.stderr}`)
    return
  }
  for (const name of listed.stdout.split('\0').filter((entry) => entry !== '' && entry !== 'package-lock.json')) {
    const path = join(root, name)
    if (!existsSync(path)) continue
    const text = readFileSync(path, 'utf8')
    if (text.includes(OUTSIDE_FOLDER))
      failures.push(`${name} refers to ${OUTSIDE_FOLDER}, which is outside the repository.`)
  }
}

function checkReadmeLength(): void {
  const lines = readFileSync(join(root, 'README.md'), 'utf8').split('\n').length
  if (lines > README_MAX_LINES)
    failures.push(`README.md has ${lines} lines; keep it under ${README_MAX_LINES} and move the rest to docs/.`)
}

const files = markdownFiles()
for (const file of files) checkLinks(file)
checkNoOutsideReferences()
checkReadmeLength()
const apiReference = readFileSync(join(root, 'docs', 'API.md'), 'utf8')
failures.push(...checkReadmeConfiguration(readFileSync(join(root, 'README.md'), 'utf8')))
failures.push(...checkConfigurationGroups(apiReference))
failures.push(...(await checkEndpointTables(apiReference)))

if (failures.length > 0) {
  console.error(`check-docs: ${failures.length} problem(s):\n- ${failures.join('\n- ')}`)
  process.exit(1)
}
console.log(
  `check-docs: ${files.length} Markdown files, every relative link resolves; nothing points outside the repository; ` +
    'the endpoint and configuration tables match the app.',
)
