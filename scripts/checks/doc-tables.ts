// The documentation's lists, compared with what they describe (run by `npm run check:docs`):
// - the endpoint tables of docs/API.md (`| method | path | …`) with the operations of the app's own
//   OpenAPI document, both ways;
// - the configuration table of README.md (`| name | kind | default | meaning |`) with the
//   variables ConfigSchema declares (src/config.ts: name, kind, default) and the bindings it names;
// - the configuration groups of docs/API.md (`| group | names |`): every variable and binding once.
import { BINDING_KINDS, configVariables } from '../../src/config'
import type { VariableMeta } from '../../src/config'
import { servedOpenApiDocument } from '../openapi-document'

/** The rows of every Markdown table whose header cells start with `header`, as trimmed cells. */
export function tableRows(markdown: string, header: string[]): string[][] {
  const rows: string[][] = []
  let inTable = false
  for (const line of markdown.split('\n')) {
    if (!line.trimStart().startsWith('|')) {
      inTable = false
      continue
    }
    const cells = splitRow(line)
    if (header.every((name, index) => cells[index]?.toLowerCase() === name)) inTable = true
    else if (inTable && !cells.every((cell) => /^:?-+:?$/.test(cell))) rows.push(cells)
  }
  return rows
}

function splitRow(line: string): string[] {
  // `\|` inside a cell is an escaped pipe, not a separator.
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim())
}

/** The code spans of a cell, in order. */
function codeSpans(cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((match) => match[1]!)
}

/** The configuration names of a cell: its code spans spelled like a variable (`JWT_SECRET`). */
function namesIn(cell: string): string[] {
  return codeSpans(cell).filter((span) => /^[A-Z][A-Z0-9_]*$/.test(span))
}

/** `GET /api/v1/posts`-style operations of docs/API.md's endpoint tables (`PUT / PATCH` is two). */
export function documentedOperations(markdown: string): string[] {
  return tableRows(markdown, ['method', 'path']).flatMap(([methods = '', path = '']) => {
    const [spelled] = codeSpans(path)
    return methods
      .split(/[\s,/]+/)
      .filter((method) => method !== '')
      .map((method) => `${method.toUpperCase()} ${spelled ?? path}`)
  })
}

/** The operations of the OpenAPI document the app serves, built in Node like `npm run openapi` does. */
export async function servedOperations(): Promise<string[]> {
  const document = (await servedOpenApiDocument()) as { paths: Record<string, Record<string, unknown>> }
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.keys(item)
      .filter((method) => ['get', 'put', 'post', 'delete', 'patch'].includes(method))
      .map((method) => `${method.toUpperCase()} ${path}`),
  )
}

/** What is on one side and not the other, both ways. */
export function compareLists(what: string, documented: string[], actual: string[], where: string): string[] {
  const failures: string[] = []
  for (const item of actual.filter((entry) => !documented.includes(entry))) {
    failures.push(`${where} lacks ${what} ${item}.`)
  }
  for (const item of documented.filter((entry) => !actual.includes(entry))) {
    failures.push(`${where} lists ${what} ${item}, which does not exist.`)
  }
  const repeated = documented.filter((entry, index) => documented.indexOf(entry) !== index)
  for (const item of new Set(repeated)) failures.push(`${where} lists ${what} ${item} more than once.`)
  return failures
}

/** A table's kind, singular: `vars` → `var`, `rate-limit bindings` → `rate-limit binding`. */
function singular(kind: string): string {
  return kind.replace(/s$/, '').replace(/s\/var$/, '/var')
}

/** The differences between the README's row for a variable and what ConfigSchema declares. */
function compareVariableRow(name: string, row: string[], declared: VariableMeta): string[] {
  const [, kind = '', defaultCell = ''] = row
  const failures: string[] = []
  if (singular(kind) !== declared.kind) failures.push(`README.md says ${name} is a ${kind}; it is a ${declared.kind}.`)
  const [written] = codeSpans(defaultCell)
  if (declared.default !== undefined && written !== declared.default) {
    failures.push(`README.md gives ${name} the default ${written ?? defaultCell}; it is \`${declared.default}\`.`)
  }
  if (declared.default === undefined && written !== undefined) {
    failures.push(`README.md gives ${name} the default \`${written}\`; it has none.`)
  }
  if (declared.required === true && !/required/.test(defaultCell))
    failures.push(`README.md must say ${name} is required.`)
  return failures
}

/** The README's configuration table against ConfigSchema and the bindings. */
export function checkReadmeConfiguration(readme: string): string[] {
  const rows = tableRows(readme, ['name', 'kind', 'default', 'meaning'])
  const failures: string[] = []
  const documented: string[] = []
  const variables = new Map(configVariables().map(({ name, ...meta }) => [name, meta]))
  const bindings = new Map<string, string>(Object.entries(BINDING_KINDS))
  for (const row of rows) {
    for (const name of namesIn(row[0] ?? '')) {
      documented.push(name)
      const declared = variables.get(name)
      if (declared !== undefined) failures.push(...compareVariableRow(name, row, declared))
      const bindingKind = bindings.get(name)
      if (bindingKind !== undefined && singular(row[1] ?? '') !== bindingKind) {
        failures.push(`README.md says ${name} is a ${row[1]}; it is a ${bindingKind}.`)
      }
    }
  }
  const actual = [...variables.keys(), ...bindings.keys()]
  return [...failures, ...compareLists('the configuration entry', documented, actual, 'The README configuration table')]
}

/** docs/API.md's configuration groups: every variable and binding exactly once. */
export function checkConfigurationGroups(apiReference: string): string[] {
  const named = tableRows(apiReference, ['group', 'names']).flatMap(([, names = '']) => namesIn(names))
  const actual = [...configVariables().map(({ name }) => name), ...Object.keys(BINDING_KINDS)]
  return compareLists('the configuration entry', named, actual, 'docs/API.md § Configuration')
}

/** docs/API.md's endpoint tables against the app's OpenAPI document. */
export async function checkEndpointTables(apiReference: string): Promise<string[]> {
  return compareLists('the endpoint', documentedOperations(apiReference), await servedOperations(), 'docs/API.md')
}
