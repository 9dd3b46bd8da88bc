// @edgepress/client: the edgepress API for apps far away, with the session rules built in.
export { createClient } from './client.js'
export type {
  ClientOptions,
  ClientSession,
  EdgepressClient,
  SessionChange,
  SessionChangeEvent,
  SignInResult,
} from './client.js'
export { browserAssertion, browserAttestation } from './passkeys.js'
export type {
  Passkey,
  PasskeyAssertion,
  PasskeyAttestation,
  PasskeyCreationOptions,
  PasskeyRequestOptions,
  RegisterPasskeyOptions,
  SignInWithPasskeyOptions,
} from './passkeys.js'
export { memoryStorage, webStorage } from './storage.js'
export type { SessionStorage, WebStorageLike } from './storage.js'
export type { RetryPolicy } from './retry.js'
export type { FetchResult, PathsWith, Problem } from './types.js'
export type { components, operations, paths } from './openapi.js'
