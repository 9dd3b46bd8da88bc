import type { QueuedEmail } from '../db/outbox'

// The emails edgepress sends. Every link has the contract's form
// `<PUBLIC_BASE_URL>/<path>?token=<token>` (docs/API.md § Email), so a client app can route it and POST
// the token to the matching endpoint.

/** An email as the outbox queues it. */
export type EmailMessage = QueuedEmail

export const LINK_PATHS = {
  emailVerification: 'verify-email',
  passwordReset: 'reset-password',
  subscriptionConfirmation: 'confirm-subscription',
  unsubscribe: 'unsubscribe',
} as const

export function linkTo(baseUrl: string, path: string, token: string): string {
  return `${baseUrl}/${path}?token=${encodeURIComponent(token)}`
}

export function emailVerificationMessage(to: string, username: string, link: string): EmailMessage {
  return {
    to,
    subject: 'Confirm your email address for edgepress',
    text: [
      `Hello ${username},`,
      '',
      'Please confirm that this is your email address by opening this link:',
      link,
      '',
      'The link is valid for 24 hours. If you did not create an edgepress account, ignore this email.',
    ].join('\n'),
  }
}

export function passwordResetMessage(to: string, username: string, link: string): EmailMessage {
  return {
    to,
    subject: 'Reset your edgepress password',
    text: [
      `Hello ${username},`,
      '',
      'Someone (hopefully you) asked to reset your password. Choose a new one here:',
      link,
      '',
      'The link is valid for 1 hour and works once. If you did not ask for this, ignore this email:',
      'your password has not changed.',
    ].join('\n'),
  }
}

export function subscriptionConfirmationMessage(
  to: string,
  name: string | null,
  confirmLink: string,
  unsubscribeLink: string,
): EmailMessage {
  return {
    to,
    subject: 'Confirm your subscription to edgepress',
    text: [
      `Hello${name === null ? '' : ` ${name}`},`,
      '',
      'Please confirm your subscription to the edgepress mailing list:',
      confirmLink,
      '',
      'If you did not ask to subscribe, ignore this email and you will hear nothing more.',
      `To unsubscribe at any time: ${unsubscribeLink}`,
    ].join('\n'),
    // RFC 2369: mail clients show an "unsubscribe" action, which opens the client app. Only
    // newsletters offer RFC 8058 one-click (src/newsletters/content.ts): they are bulk mail.
    headers: { 'List-Unsubscribe': `<${unsubscribeLink}>` },
  }
}

export type SecurityEvent =
  | 'mfa_enabled'
  | 'mfa_disabled'
  | 'recovery_code_used'
  | 'recovery_codes_regenerated'
  | 'provider_linked'
  | 'provider_unlinked'
  | 'passkey_added'
  | 'passkey_removed'
  | 'email_changed'
  | 'sign_in_methods_removed'

const SECURITY_EVENTS: Record<SecurityEvent, { subject: string; what: (detail: string) => string }> = {
  mfa_enabled: {
    subject: 'Two-factor sign-in is on for your edgepress account',
    what: () =>
      'Two-factor sign-in was turned on for your account: signing in now also needs a code from your authenticator app, and every other session was signed out.',
  },
  mfa_disabled: {
    subject: 'Two-factor sign-in is off for your edgepress account',
    what: () => 'Two-factor sign-in was turned off for your account, and every other session was signed out.',
  },
  recovery_code_used: {
    subject: 'A recovery code was used to sign in to edgepress',
    what: () => 'Someone signed in to your account with one of your two-factor recovery codes.',
  },
  recovery_codes_regenerated: {
    subject: 'New recovery codes for your edgepress account',
    what: () => 'New two-factor recovery codes were made for your account; the old ones no longer work.',
  },
  provider_linked: {
    subject: 'A sign-in method was added to your edgepress account',
    what: (provider) => `Signing in with ${provider} now opens your account.`,
  },
  provider_unlinked: {
    subject: 'A sign-in method was removed from your edgepress account',
    what: (provider) => `Signing in with ${provider} no longer opens your account.`,
  },
  passkey_added: {
    subject: 'A passkey was added to your edgepress account',
    what: (name) => `A passkey named “${name}” was added: it now signs in to your account.`,
  },
  passkey_removed: {
    subject: 'A passkey was removed from your edgepress account',
    what: (name) => `The passkey named “${name}” was removed: it no longer signs in to your account.`,
  },
  email_changed: {
    subject: 'The email address of your edgepress account was changed',
    what: (address) =>
      `The email address of your account was changed to ${address}. Messages about the account now go there, not here.`,
  },
  sign_in_methods_removed: {
    subject: 'Sign-in methods were removed from your edgepress account',
    what: (methods) =>
      `Your password was reset from this mailbox. These ways to sign in were added while the address was not yet verified, so whoever added them may not have been you; they were removed: ${methods}.`,
  },
}

/**
 * Tells the account owner about a change to how their account signs in; `detail` is what the
 * event names (the provider, the new address, the methods removed).
 */
export function securityEventMessage(to: string, username: string, event: SecurityEvent, detail = ''): EmailMessage {
  const { subject, what } = SECURITY_EVENTS[event]
  return {
    to,
    subject,
    text: [
      `Hello ${username},`,
      '',
      what(detail),
      '',
      'If this was you, there is nothing to do. If it was not, reset your password at once and sign',
      'out every session (POST /api/v1/auth/logout-all), then check the ways your account signs in.',
    ].join('\n'),
  }
}
