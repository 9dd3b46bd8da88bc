// The layering rules of src/ (CONTRIBUTING.md § Layers), checked by `npm run lint:deps` in
// `npm test`. Lower layers never reach up:
//   lib/ < db/ < email/ < sessions/, newsletters/ < http/ < middleware/ < routes/
// with app-env.ts, config.ts, router.ts, errors.ts, app.ts, index.ts and scheduled.ts on top
// (config.ts may be read by every layer from db/ up, never by lib/). Tests beside their module may
// import anything.
const TESTS = '\\.test\\.ts$'
// Unanchored, so it also matches a package reached through a symlink or pnpm's store
// (node_modules/.pnpm/hono@4/node_modules/hono/…); see options.preserveSymlinks.
const HONO = 'node_modules/(hono|@hono)/'
const DRIZZLE = 'node_modules/drizzle-orm/'
const TOP = '^src/(app-env|router|errors|index|app|scheduled)\\.ts$'
const CONFIG = '^src/config\\.ts$'

/** A rule that `from` never imports any of `to`. */
function layer(name, comment, from, to) {
  return { name, severity: 'error', comment, from: { path: from, pathNot: TESTS }, to: { path: to } }
}

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
    layer(
      'lib-is-the-bottom',
      'lib/ holds primitives: no Hono, no drizzle, no configuration, nothing above it. They take what they need as arguments.',
      '^src/lib/',
      [HONO, DRIZZLE, CONFIG, '^src/(db|email|sessions|http|middleware|routes)/', TOP],
    ),
    layer(
      'db-is-sql-only',
      'db/ owns data access: SQL over a Db and plain values. No Hono Context, no KV, no tokens, no revocation protocol (src/sessions/).',
      '^src/db/',
      [HONO, '^src/(email|sessions|http|middleware|routes)/', '^src/lib/(tokens|token-keys)\\.ts$', TOP],
    ),
    layer(
      'email-below-sessions',
      'email/ takes what it needs as arguments (db, config, an execution context), not a Context.',
      '^src/email/',
      [HONO, '^src/(sessions|http|middleware|routes)/', TOP],
    ),
    layer(
      'outbox-through-queue-email',
      'Only src/email/ writes the outbox table: queueEmail() checks first that a transport can deliver the message.',
      '^src/(?!email/|db/outbox\\.ts$)',
      ['^src/db/outbox\\.ts$'],
    ),
    layer(
      'sessions-below-http',
      'sessions/ is the login-session protocol over D1, KV and tokens: it takes a SessionDeps object, never a Context.',
      '^src/sessions/',
      [HONO, '^src/(http|middleware|routes)/', TOP],
    ),
    layer(
      'newsletters-below-http',
      'newsletters/ is the send pipeline (queue consumer, NewsletterSender, batches): it takes a Db, a queue and a config, never a Context.',
      '^src/newsletters/',
      [HONO, '^src/(http|middleware|routes)/', TOP],
    ),
    layer(
      'data-and-mail-not-to-newsletters',
      'The pipeline sits above data access, email and sessions, which never reach up into it.',
      '^src/(lib|db|email|sessions)/',
      ['^src/newsletters/'],
    ),
    layer(
      'http-helpers-below-middleware',
      'http/ holds request and response helpers that middleware and handlers share.',
      '^src/http/',
      ['^src/(middleware|routes)/', TOP],
    ),
    layer(
      'middleware-not-to-routes',
      'Middleware reads what a route declares (routePolicy) and throws ApiError; it never imports a route or errors.ts.',
      '^src/middleware/',
      ['^src/routes/', TOP],
    ),
    {
      name: 'resources-stand-alone',
      severity: 'error',
      comment: 'A resource folder never imports another resource folder; shared route code sits in src/routes/*.ts.',
      from: { path: '^src/routes/([^/]+)/' },
      to: { path: '^src/routes/[^/]+/', pathNot: '^src/routes/$1/' },
    },
    layer(
      'shared-route-code-not-to-resources',
      'src/routes/*.ts is shared by the resources, so it cannot depend on one of them.',
      '^src/routes/[^/]+\\.ts$',
      ['^src/routes/[^/]+/'],
    ),
    layer('src-not-to-tests-or-scripts', 'The Worker ships src/ only.', '^src/', ['^test/', '^scripts/', TESTS]),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // `import type` counts: a type-only import still couples the layers.
    tsPreCompilationDeps: true,
    // Paths through node_modules stay as written (node_modules/hono/…) even where the package
    // manager links them from elsewhere, so the package rules above keep matching.
    preserveSymlinks: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
  },
}
