import { createRoute, z } from '@hono/zod-openapi'
import { notFound } from '../lib/api-error'
import { createRouter, json, problems } from '../router'
import type { AppRouteHandler } from '../router'

// The files that let native apps use this site's passkeys: Apple's associated domains
// (`webcredentials`) and Android's Digital Asset Links (`get_login_creds`). Each exists only when
// its variable names the apps (APPLE_APP_IDS, ANDROID_APPS); docs/clients.md shows the app side.

const AppleAssociation = z
  .object({
    webcredentials: z.object({ apps: z.array(z.string().openapi({ example: 'ABCDE12345.com.example.app' })) }),
  })
  .openapi('AppleAppSiteAssociation')

const AssetLinks = z
  .array(
    z.object({
      relation: z.array(z.string().openapi({ example: 'delegate_permission/common.get_login_creds' })),
      target: z.object({
        namespace: z.literal('android_app'),
        package_name: z.string().openapi({ example: 'com.example.app' }),
        sha256_cert_fingerprints: z.array(z.string()),
      }),
    }),
  )
  .openapi('AssetLinks')

const appleAssociation = createRoute({
  method: 'get',
  path: '/.well-known/apple-app-site-association',
  tags: ['Meta'],
  summary: 'iOS associated domains: the apps that may use this site’s passkeys',
  description: 'From APPLE_APP_IDS; 404 when it is unset.',
  responses: { 200: json(AppleAssociation, 'The apps'), ...problems(404, 405) },
})

const assetLinks = createRoute({
  method: 'get',
  path: '/.well-known/assetlinks.json',
  tags: ['Meta'],
  summary: 'Android Digital Asset Links: the apps that may use this site’s passkeys',
  description: 'From ANDROID_APPS; 404 when it is unset.',
  responses: { 200: json(AssetLinks, 'The statements'), ...problems(404, 405) },
})

// Apple's CDN and Google's verifier fetch these now and then; an hour keeps a change quick to land.
const ASSOCIATION_CACHE = 'public, max-age=3600'

const getAppleAssociation: AppRouteHandler<typeof appleAssociation> = (c) => {
  const apps = c.get('config').appleAppIds
  if (apps === undefined) throw notFound('association file')
  c.header('Cache-Control', ASSOCIATION_CACHE)
  return c.json({ webcredentials: { apps } }, 200)
}

const getAssetLinks: AppRouteHandler<typeof assetLinks> = (c) => {
  const apps = c.get('config').androidApps
  if (apps === undefined) throw notFound('asset links file')
  c.header('Cache-Control', ASSOCIATION_CACHE)
  return c.json(
    apps.map((app) => ({
      relation: ['delegate_permission/common.get_login_creds'],
      target: {
        namespace: 'android_app' as const,
        package_name: app.package_name,
        sha256_cert_fingerprints: app.sha256_cert_fingerprints,
      },
    })),
    200,
  )
}

export const appAssociationRouter = createRouter()
  .openapi(appleAssociation, getAppleAssociation)
  .openapi(assetLinks, getAssetLinks)
