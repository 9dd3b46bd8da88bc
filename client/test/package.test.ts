import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

// The package as an app would install it: built, packed by `npm pack`, unpacked into a project's
// node_modules, and imported by Node 20 through its `exports` map. Its size is reported here.

const root = join(import.meta.dirname, '..', '..')
const clientDir = join(root, 'client')
const GZIP_TARGET_BYTES = 6 * 1024

let work: string

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'edgepress-client-'))
  execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', join(clientDir, 'tsconfig.json')], { stdio: 'pipe' })
}, 120_000)

afterAll(() => {
  rmSync(work, { recursive: true, force: true })
})

describe('@edgepress/client as a package', () => {
  it('packs into a tarball whose exports resolve in Node 20, with its types', () => {
    const packed = JSON.parse(
      execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], {
        cwd: clientDir,
        encoding: 'utf8',
      }),
    ) as Array<{ filename: string; files: Array<{ path: string }> }>
    const tarball = packed[0]
    expect(tarball?.files.map((f) => f.path)).toEqual(expect.arrayContaining(['dist/index.js', 'dist/index.d.ts']))
    const app = join(work, 'app')
    const installed = join(app, 'node_modules', '@edgepress', 'client')
    mkdirSync(installed, { recursive: true })
    execFileSync('tar', ['-xzf', join(work, tarball!.filename), '-C', installed, '--strip-components=1'])
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', type: 'module', private: true }))
    writeFileSync(
      join(app, 'main.js'),
      `import { createClient, memoryStorage, webStorage } from '@edgepress/client'
const client = createClient({ baseUrl: 'https://api.example', fetch: async () => new Response('{}') })
console.log(JSON.stringify({ createClient: typeof createClient, memoryStorage: typeof memoryStorage, webStorage: typeof webStorage, GET: typeof client.GET }))`,
    )
    const output = execFileSync(process.execPath, [join(app, 'main.js')], { cwd: app, encoding: 'utf8' })
    expect(JSON.parse(output)).toEqual({
      createClient: 'function',
      memoryStorage: 'function',
      webStorage: 'function',
      GET: 'function',
    })
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as {
      exports: Record<string, { types: string }>
      dependencies?: Record<string, string>
    }
    expect(manifest.exports['.']?.types).toBe('./dist/index.d.ts')
    expect(manifest.dependencies ?? {}).toEqual({})
    // Its version is the API's.
    const api = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
    expect((manifest as { version?: string }).version).toBe(api.version)
    // And a TypeScript app type-checks against the packed declarations, paths and answers included.
    writeFileSync(
      join(app, 'typed.ts'),
      `import { createClient } from '@edgepress/client'
import type { paths } from '@edgepress/client'
type MeAnswer = paths['/api/v1/users/me']['get']['responses'][200]['content']['application/json']
const client = createClient({ baseUrl: 'https://api.example' })
export async function username(): Promise<string | undefined> {
  const me = await client.GET('/api/v1/users/me')
  const copy: MeAnswer | undefined = me.data
  return copy?.username
}`,
    )
    execFileSync(
      join(root, 'node_modules', '.bin', 'tsc'),
      [
        '--noEmit',
        '--strict',
        '--module',
        'NodeNext',
        '--moduleResolution',
        'NodeNext',
        '--lib',
        'ES2022,DOM',
        'typed.ts',
      ],
      { cwd: app, stdio: 'pipe' },
    )
  })

  it(`stays under ${GZIP_TARGET_BYTES / 1024} KiB gzip, minified, without types`, async () => {
    const bundled = await build({
      entryPoints: [join(clientDir, 'dist', 'index.js')],
      bundle: true,
      minify: true,
      format: 'esm',
      write: false,
    })
    const bytes = gzipSync(bundled.outputFiles[0]!.contents, { level: 9 }).length
    console.log(`@edgepress/client: ${bundled.outputFiles[0]!.contents.length} bytes minified, ${bytes} bytes gzip`)
    expect(bytes).toBeLessThanOrEqual(GZIP_TARGET_BYTES)
  })
})
