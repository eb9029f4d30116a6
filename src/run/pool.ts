export interface PoolJob {
  /** Settles once the job's dependencies have; these must be other jobs of the same pool. */
  ready: () => Promise<unknown>;
  run: () => Promise<void>;
  /** Names the job in the error when its dependencies never settle. */
  name?: string;
}

/**
 * Runs jobs with at most `limit` at a time, starting each only once its dependencies have settled
 * (`ready`). Jobs are started in list order among those ready, so builders listed first go first.
 *
 * A job that throws does not abandon the others: every job is started and awaited, and then the
 * errors are thrown together (the single error, or an AggregateError of them). A job whose
 * dependencies never settle once nothing else can run (a dependency threw before settling them)
 * fails with an error saying so instead of hanging the pool.
 */
export async function runPool(jobs: PoolJob[], limit: number, signal: AbortSignal): Promise<void> {
  const slots = new Slots(limit);
  // A job waiting on one that an interrupt stopped before it ran would wait forever.
  const aborted = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  // Jobs still waiting for their dependencies. Once no job runs or waits for a slot, and a turn of
  // the event loop has let every settled dependency reach its dependants, the rest are stuck.
  let unready = jobs.length;
  const STALLED = Symbol("stalled");
  let stall: () => void = () => {};
  const stalled = new Promise<typeof STALLED>((resolve) => {
    stall = () => resolve(STALLED);
  });
  const idle = () => slots.idle() && unready > 0;
  const checkStall = () => {
    if (idle()) setImmediate(() => idle() && stall());
  };
  const results = await Promise.allSettled(
    jobs.map(async (job, i) => {
      let state: unknown;
      try {
        state = await Promise.race([job.ready(), aborted, stalled]);
      } finally {
        unready--;
        checkStall(); // a dependency that rejected can be the last thing that happens
      }
      if (signal.aborted) return;
      if (state === STALLED)
        throw new Error(
          `${job.name ?? `job ${i + 1}`} never started: what it waits for ended without settling (an earlier job failed)`,
        );
      await slots.take();
      try {
        if (!signal.aborted) await job.run();
      } finally {
        slots.free();
        checkStall();
      }
    }),
  );
  const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  if (errors.length === 1) throw errors[0];
  // The message carries every error's: the CLI prints only the message.
  const said = errors.map((e) => (e instanceof Error ? e.message : String(e)));
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} jobs failed: ${said.join("; ")}`);
}

/** At most `limit` holders at a time; the others wait in order. */
export class Slots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async take(): Promise<void> {
    while (this.running >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
  }

  free(): void {
    this.running--;
    this.waiting.shift()?.();
  }

  /** Runs `work` holding a slot. */
  async use<T>(work: () => Promise<T>): Promise<T> {
    await this.take();
    try {
      return await work();
    } finally {
      this.free();
    }
  }

  idle(): boolean {
    return this.running === 0 && this.waiting.length === 0;
  }
}
