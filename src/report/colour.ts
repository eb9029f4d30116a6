/**
 * Colours only for a human at a terminal: stdout is a TTY and NO_COLOR is not set. Following
 * no-color.org, an empty NO_COLOR counts as not set.
 */
export function shouldColour(
  stream: { isTTY?: boolean } = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}
