// What the Worker bundles in place of zod's table of every locale (wrangler.toml [alias]). zod
// re-exports all of them as `z.locales` (and `z.core.locales`), which a bundler cannot drop once
// the `z` namespace is used, as @hono/zod-openapi does; edgepress words its own error messages
// (src/http/problems) and only ever uses English, zod's default. About 23 KiB gzip and a few
// milliseconds of start-up.
export { default as en } from 'zod/v4/locales/en.js'
