// Where a client keeps its session between runs. Every method may answer at once or with a
// promise, so React Native's SecureStore or AsyncStorage fit as they are.

export interface SessionStorage {
  get(key: string): string | null | undefined | Promise<string | null | undefined>
  set(key: string, value: string): void | Promise<void>
  remove(key: string): void | Promise<void>
}

/** The default: the session lives as long as the client object (a server, a test, a tab that signs in each time). */
export function memoryStorage(): SessionStorage {
  const values = new Map<string, string>()
  return {
    get: (key) => values.get(key) ?? null,
    set: (key, value) => {
      values.set(key, value)
    },
    remove: (key) => {
      values.delete(key)
    },
  }
}

/** The shape of window.localStorage and window.sessionStorage. */
export interface WebStorageLike {
  getItem(key: string): string | null
  setItem(key: string, value: string): void
  removeItem(key: string): void
}

/**
 * A Web Storage area (`webStorage(window.localStorage)`). Passed in, never looked up: the SDK
 * itself touches no global storage, so it runs unchanged where there is none.
 */
export function webStorage(area: WebStorageLike): SessionStorage {
  return {
    get: (key) => area.getItem(key),
    set: (key, value) => area.setItem(key, value),
    remove: (key) => area.removeItem(key),
  }
}
