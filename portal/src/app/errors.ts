// One place that turns an error into a sentence for a person. Library and network errors say
// things like "TypeError: Failed to fetch"; the page says what happened and what to do.

/** An error whose message is already written for the person using the page. */
export class UserError extends Error {
  override name = "UserError";
}

export function describeError(error: unknown): string {
  if (error instanceof UserError) return error.message;
  if (error instanceof TypeError && /fetch|network/i.test(error.message)) {
    return "The CareLedger node cannot be reached. Check your connection, or try again in a moment.";
  }
  if (error instanceof Error) return error.message || "Something went wrong.";
  return String(error);
}
