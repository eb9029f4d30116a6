/**
 * Reads what libs' scap-open example (userspace/libscap/examples/01-open) printed. It announces the
 * number of events it will wait for and, at the end, how many it captured; a run that exits 0 with
 * fewer events (e.g. interrupted, or a driver that delivers nothing) is not a pass.
 */
export interface ScapOpenReport {
  /** `* Run until '50' events are catched.` */
  requested?: number;
  /** ``Number of `SCAP_SUCCESS` (events correctly captured): 50`` */
  captured?: number;
  /** The capture ended normally: `[SCAP-OPEN]: Bye!` */
  finished: boolean;
}

/** The last run's figures when the output holds several (a support probe, then the capture). */
export function parseScapOpen(output: string): ScapOpenReport {
  const last = (re: RegExp) => [...output.matchAll(re)].at(-1)?.[1];
  const requested = last(/Run until '(\d+)' events/g);
  const captured = last(/SCAP_SUCCESS` \(events correctly captured\): (\d+)/g);
  return {
    requested: requested === undefined ? undefined : Number(requested),
    captured: captured === undefined ? undefined : Number(captured),
    finished: output.includes("[SCAP-OPEN]: Bye!"),
  };
}

/** Why a scap-open run that exited 0 still failed, or undefined if it captured what it was asked. */
export function scapOpenShortfall(output: string): string | undefined {
  const r = parseScapOpen(output);
  if (!r.finished || r.captured === undefined) return "scap-open exited 0 without printing its statistics";
  if (!r.requested) return "scap-open did not say how many events it was asked for";
  if (r.captured < r.requested) return `captured ${r.captured} of the ${r.requested} events asked for`;
  return undefined;
}
