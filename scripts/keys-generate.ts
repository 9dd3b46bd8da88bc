// `npm run keys:generate -- [--alg EdDSA|ES256] [--previous '<JWT_PUBLIC_JWKS JSON>']`
// Prints a new signing key pair as JWKs and the exact commands to install it. For a rotation, pass
// the JWKS currently accepted as --previous: the output JWKS keeps those keys, so tokens signed by
// the old key keep verifying until they expire.
import { randomUUID } from 'node:crypto'
import { parseArgs } from 'node:util'
import { exportJWK, generateKeyPair } from 'jose'

const { values } = parseArgs({
  options: { alg: { type: 'string', default: 'EdDSA' }, previous: { type: 'string' } },
})
const alg = values.alg
if (alg !== 'EdDSA' && alg !== 'ES256') {
  console.error('keys:generate: --alg must be EdDSA or ES256')
  process.exit(1)
}

const { privateKey, publicKey } = await generateKeyPair(alg, {
  extractable: true,
  ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}),
})
const kid = `${alg.toLowerCase()}-${new Date().toISOString().slice(0, 10)}-${randomUUID().slice(0, 8)}`
const privateJwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' }
const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
const previous = values.previous === undefined ? [] : ((JSON.parse(values.previous) as { keys?: unknown[] }).keys ?? [])
const jwks = { keys: [publicJwk, ...previous] }

const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`
console.log(`# New ${alg} signing key, kid ${kid}. Keep the private JWK secret; never commit it.

JWT_PRIVATE_JWK=${JSON.stringify(privateJwk)}
JWT_PUBLIC_JWKS=${JSON.stringify(jwks)}

# Production:
echo ${quote(JSON.stringify(privateJwk))} | npx wrangler secret put JWT_PRIVATE_JWK
echo ${quote(JSON.stringify(jwks))} | npx wrangler secret put JWT_PUBLIC_JWKS
# and set JWT_ALG = "${alg}" in wrangler.toml [vars], then deploy.

# Local development: put the two JWT_* lines above in .dev.vars and run
#   npm run dev -- --var JWT_ALG:${alg}`)
