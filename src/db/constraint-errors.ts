// What a failed D1 statement says about the constraint it broke. drizzle wraps D1's error (and D1
// SQLite's), so the constraint's words may sit several causes deep.

/** The messages of an error and its causes, outermost first (at most 8 deep). */
export function errorMessages(err: unknown): string[] {
  const messages: string[] = []
  for (let cause: unknown = err, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth++) {
    messages.push(cause.message)
  }
  return messages
}

/**
 * What SQLite names as the unique constraint a statement violated (`posts.slug`, or `index
 * 'users_email_lower_unique'` for an expression index; D1 may append `: SQLITE_CONSTRAINT`), or
 * undefined. Only
 * the text after SQLite's marker names the index; drizzle's wrapper quotes the whole query.
 */
export function violatedUniqueIndex(err: unknown): string | undefined {
  return errorMessages(err)
    .map((message) => /UNIQUE constraint failed:(.*)/.exec(message)?.[1]?.trim())
    .find((columns) => columns !== undefined)
}

export function isForeignKeyViolation(err: unknown): boolean {
  return errorMessages(err).some((message) => /FOREIGN KEY constraint failed/.test(message))
}
