/** Progress lines go to stderr so that stdout carries only what the user asked for. */
export function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}
