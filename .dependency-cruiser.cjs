// The layering rules of src/ (CONTRIBUTING.md § Layers), checked by `npm run lint:deps` in
// `npm test`. Lower layers never reach up: lib/ < db/ < email/ < http/ < middleware/ < routes/,
// with router.ts, errors.ts and index.ts on top. Tests beside their module may import anything.
const TESTS = '\\.test\\.ts$'
const HONO = '^node_modules/(hono|@hono)/'

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A cycle makes load order matter and layers meaningless.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'lib-is-the-bottom',
      severity: 'error',
      comment: 'lib/ holds primitives: no Hono, no database, no email, no HTTP layer.',
      from: { path: '^src/lib/', pathNot: TESTS },
      to: { path: [HONO, '^src/(db|email|http|middleware|routes)/', '^src/(router|errors|index|app|scheduled)\\.ts$'] },
    },
    {
      name: 'db-below-http',
      severity: 'error',
      comment: 'db/ owns data access: it takes a Db and plain values, never a Hono Context.',
      from: { path: '^src/db/', pathNot: TESTS },
      to: { path: [HONO, '^src/(email|http|middleware|routes)/', '^src/(router|errors|index|app|scheduled)\\.ts$'] },
    },
    {
      name: 'email-below-http',
      severity: 'error',
      comment: 'email/ takes what it needs as arguments (db, config, an execution context), not a Context.',
      from: { path: '^src/email/', pathNot: TESTS },
      to: { path: [HONO, '^src/(http|middleware|routes)/', '^src/(router|errors|index|app|scheduled)\\.ts$'] },
    },
    {
      name: 'http-helpers-below-middleware',
      severity: 'error',
      comment: 'http/ holds request and response helpers that middleware and handlers share.',
      from: { path: '^src/http/', pathNot: TESTS },
      to: { path: ['^src/(middleware|routes)/', '^src/(router|index|app|scheduled)\\.ts$'] },
    },
    {
      name: 'middleware-not-to-routes',
      severity: 'error',
      comment: 'Middleware reads what a route declares (routePolicy); it never imports a route.',
      from: { path: '^src/middleware/', pathNot: TESTS },
      to: { path: ['^src/routes/', '^src/(router|index|app|scheduled)\\.ts$'] },
    },
    {
      name: 'resources-stand-alone',
      severity: 'error',
      comment: 'A resource folder never imports another resource folder; shared route code sits in src/routes/*.ts.',
      from: { path: '^src/routes/([^/]+)/' },
      to: { path: '^src/routes/[^/]+/', pathNot: '^src/routes/$1/' },
    },
    {
      name: 'shared-route-code-not-to-resources',
      severity: 'error',
      comment: 'src/routes/*.ts is shared by the resources, so it cannot depend on one of them.',
      from: { path: '^src/routes/[^/]+\\.ts$', pathNot: TESTS },
      to: { path: '^src/routes/[^/]+/' },
    },
    {
      name: 'src-not-to-tests-or-scripts',
      severity: 'error',
      comment: 'The Worker ships src/ only.',
      from: { path: '^src/', pathNot: TESTS },
      to: { path: ['^test/', '^scripts/', TESTS] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // `import type` counts: a type-only import still couples the layers.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
  },
}
