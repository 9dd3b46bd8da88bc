import { and, eq, exists, ne, or, sql } from 'drizzle-orm'
import type { SQL } from 'drizzle-orm'
import type { Db } from './client'
import { externalIdentities, passkeys, users } from './schema'

// An account's ways to sign in: its password, its linked providers, its passkeys. Removing one
// must leave another, and the rule is checked inside the removing statement, so two concurrent
// removals (of a provider and a passkey, or of two passkeys) cannot both pass.

/**
 * The password_hash of an account created by a sign-in provider: not a hash at all, so no password
 * ever matches it (verifyPassword refuses what it cannot parse). A password reset sets a real one.
 */
export const NO_PASSWORD = '!oidc'

/**
 * The user keeps a way to sign in besides the one `removing` names: a password, another linked
 * provider, or another passkey. A condition for the WHERE of the removal.
 */
export function keepsAnotherWayIn(
  db: Db,
  userId: number,
  removing: { provider: string } | { passkeyId: number },
): SQL | undefined {
  const provider = db
    .select({ one: sql`1` })
    .from(externalIdentities)
    .where(
      and(
        eq(externalIdentities.userId, userId),
        'provider' in removing ? ne(externalIdentities.provider, removing.provider) : undefined,
      ),
    )
  const passkey = db
    .select({ one: sql`1` })
    .from(passkeys)
    .where(and(eq(passkeys.userId, userId), 'passkeyId' in removing ? ne(passkeys.id, removing.passkeyId) : undefined))
  const passwordOf = sql`(select ${users.passwordHash} from ${users} where ${users.id} = ${userId})`
  return or(sql`${passwordOf} <> ${NO_PASSWORD}`, exists(provider), exists(passkey))
}
