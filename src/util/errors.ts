/**
 * A problem with what the user gave us (flags, config, plan). The CLI prints the message on one
 * line and exits with code 2; nothing on disk is touched after it is thrown.
 */
export class UsageError extends Error {
  override name = "UsageError";
}
