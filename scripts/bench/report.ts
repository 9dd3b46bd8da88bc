// How the benchmarks report: a Markdown table on stdout, and JSON in bench-results/.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { root } from '../project-root'
import { log } from './serve'

/** Prints a Markdown table: the first column left-aligned, the others right-aligned. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)))
  const line = (cells: string[]): string =>
    `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`
  console.log('')
  console.log(line(header))
  console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`)
  for (const row of rows) console.log(line(row))
  console.log('')
}

/** Where every benchmark writes its results (git-ignored). */
export const resultsDir = join(root, 'bench-results')

/** Writes `results` to bench-results/<prefix><timestamp>.json and logs where. */
export function writeResults(prefix: string, date: string, results: unknown): void {
  const outDir = resultsDir
  mkdirSync(outDir, { recursive: true })
  const outFile = join(outDir, `${prefix}${date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(outFile, `${JSON.stringify(results, null, 2)}\n`)
  log(`results written to ${outFile}`)
}
