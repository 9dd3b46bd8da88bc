import { describe, it } from 'vitest'
import { api, expectProblem, mintToken, registerAndLogin, registerUser } from '../../../test/helpers'

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

function me(headers: Record<string, string> = {}): Promise<Response> {
  return api('GET', '/users/me', undefined, undefined, headers)
}

describe('GET /api/v1/users/me', () => {
  it('returns the private view, never cached', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await me({ authorization: `Bearer ${tokens.access_token}` })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(res.headers.get('cache-control')).toContain('no-store')
    const text = await res.text()
    const body = JSON.parse(text) as Record<string, unknown>
    expect(Object.keys(body).sort()).toEqual([
      'created_at',
      'email',
      'email_verified',
      'id',
      'is_admin',
      'last_login_at',
      'username',
    ])
    expect(body).toMatchObject({
      id: user.id,
      username: user.username,
      email: user.email,
      email_verified: false,
      is_admin: false,
    })
    expect(body.created_at).toMatch(ISO_UTC)
    expect(body.last_login_at).toMatch(ISO_UTC)
    expect(text).not.toContain(user.password)
    expect(text).not.toMatch(/password|hash|pbkdf2/i)
  })

  it.for([
    ['JWT', 'JWT'],
    ['lower-case bearer', 'bearer'],
    ['upper-case JWT', 'jwt'],
  ] as const)('accepts the %s scheme', async ([, scheme], { expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await me({ authorization: `${scheme} ${tokens.access_token}` })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id })
  })

  it('accepts a token minted elsewhere with the configured key for an existing user', async ({ expect }) => {
    const user = await registerUser()
    const token = await mintToken({ sub: String(user.id) })
    const res = await me({ authorization: `Bearer ${token}` })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username: user.username, last_login_at: null })
  })

  it('answers 401 not_authenticated with a challenge when no token is sent', async ({ expect }) => {
    const res = await me()
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })

  it('answers 401 to a valid token whose subject names no user', async ({ expect }) => {
    const token = await mintToken({ sub: '987654321' })
    const res = await me({ authorization: `Bearer ${token}` })
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="api"/)
    const problem = await expectProblem(res, 401, 'token_invalid')
    expect(problem).not.toHaveProperty('errors')
  })

  it('answers 401 token_invalid to a refresh token', async () => {
    const { tokens } = await registerAndLogin()
    await expectProblem(await me({ authorization: `Bearer ${tokens.refresh_token}` }), 401, 'token_invalid')
  })

  it('answers 401 token_expired to an expired token', async () => {
    const user = await registerUser()
    const now = Math.floor(Date.now() / 1000)
    const token = await mintToken({ sub: String(user.id), iat: now - 1000, nbf: now - 1000, exp: now - 600 })
    await expectProblem(await me({ authorization: `Bearer ${token}` }), 401, 'token_expired')
  })
})
