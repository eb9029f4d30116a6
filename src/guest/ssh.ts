import { readdir, stat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import ssh2, { type ClientChannel } from "ssh2";
import * as tar from "tar";
import { type ExtractResult, safeExtract } from "../util/safe-extract.js";
import { shellQuote } from "../util/shell-quote.js";

export interface ExecOptions {
  /** Kills the command's whole process group in the guest when it runs longer. */
  timeoutMs?: number;
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  stdin?: Readable | string;
  /**
   * Once the command has exited, how long its output may still arrive before whatever still holds
   * the output open is killed (default {@link DRAIN_MS}).
   */
  drainMs?: number;
}

/** Why the connection is gone: the guest stopped answering keepalives (its kernel hung), or it ended otherwise. */
export type ConnectionLoss = "keepalive" | "closed";

export interface ExecResult {
  /** undefined when the command was killed (timeout) or the channel died. */
  exitCode: number | undefined;
  signal: string | undefined;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  durationMs: number;
  /**
   * Set when the command exited but its output was still held open {@link ExecOptions.drainMs}
   * later: the processes it left behind in its session, as "<pid> <command line>" (at most
   * {@link LEFTOVER_MAX}). They were killed, the channel closed; `exitCode` is the command's own.
   * Can be empty when they ended by themselves while being looked up.
   */
  leftover?: string[];
  /** Set when the channel ended without an exit status because the connection was lost. */
  channelLost?: ConnectionLoss;
}

/** Output kept per stream; the rest is streamed to the callbacks only, so memory stays bounded. */
const KEEP_BYTES = 1 << 20;

/** How long a command's output may still flow after it exited before its leftovers are killed. */
export const DRAIN_MS = 3000;
/** Leftover processes named in an ExecResult (all of them are killed). */
export const LEFTOVER_MAX = 20;
/** How long naming and killing leftovers may take before the command's channel is closed anyway. */
const REAP_MS = 5000;
/** ssh2's message when keepalives went unanswered (node_modules/ssh2/lib/client.js). */
const KEEPALIVE_TIMEOUT = "Keepalive timeout";

let commandCounter = 0;

/**
 * The host's one SSH connection to a guest: commands with streamed output, exit codes and
 * timeouts, and file copies both ways (tar over a command channel, so no sftp-server is needed).
 */
export class GuestChannel {
  private lostBy: ConnectionLoss | undefined;

  private constructor(private readonly client: ssh2.Client) {
    client.on("error", (err: Error & { level?: string }) => {
      if (err.level === "client-timeout" && err.message === KEEPALIVE_TIMEOUT) this.lostBy ??= "keepalive";
    });
    client.on("close", () => {
      this.lostBy ??= "closed";
    });
  }

  static connect(opts: {
    port: number;
    privateKey: string;
    timeoutMs: number;
    /** Keepalive every this many ms (default 5000)… */
    keepaliveIntervalMs?: number;
    /** …and the connection is dropped as lost after this many unanswered in a row (default 6). */
    keepaliveCountMax?: number;
  }): Promise<GuestChannel> {
    return new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      const guest = new GuestChannel(client);
      client.once("ready", () => resolve(guest));
      // A client can emit several errors; only the first one before "ready" matters. Later ones
      // (the VM went away) surface as failed commands, as lost(), and as the session's fault.
      client.on("error", (err) => {
        reject(err);
        client.end();
      });
      client.connect({
        host: "127.0.0.1",
        port: opts.port,
        username: "root",
        privateKey: opts.privateKey,
        readyTimeout: opts.timeoutMs,
        keepaliveInterval: opts.keepaliveIntervalMs ?? 5000,
        keepaliveCountMax: opts.keepaliveCountMax ?? 6,
        // The VM was booted a moment ago from our own image on loopback: there is no host key
        // worth pinning, and nothing else can be listening on the forwarded port.
        hostVerifier: () => true,
      });
    });
  }

  /** Fires when the connection drops (guest died, network gone). */
  onClose(listener: () => void): void {
    this.client.on("close", listener);
  }

  /**
   * Why the connection is gone, once it is: "keepalive" when the guest stopped answering
   * keepalives (a hung kernel), "closed" when it ended otherwise (including by close()).
   */
  lost(): ConnectionLoss | undefined {
    return this.lostBy;
  }

  close(): void {
    this.client.end();
  }

  async exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const id = `${process.pid}-${++commandCounter}`;
    const pidFile = `/run/kmatrix-cmd-${id}.pid`;
    // sshd makes each command a session and process-group leader; remembering its pid lets a
    // timeout kill the whole group, grandchildren included.
    const wrapped = `echo $$ > ${pidFile}; exec sh -c ${shellQuote(command)}`;
    const started = Date.now();
    let timedOut = false;
    let exited = false;
    let code: number | undefined;
    let signal: string | undefined;
    let timer: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    let reaping: Promise<string[]> | undefined;
    // sshd sends the exit status when the command's shell ends but keeps the channel open while
    // anything still holds its stdout/stderr (a daemon it started): the exit ends the command,
    // and the output gets a moment to drain before the holders are killed.
    const onExit = (channel: ClientChannel) =>
      channel.on("exit", (c: number | null, s?: string) => {
        code = c ?? undefined;
        signal = s;
        exited = true;
        if (timedOut) return;
        clearTimeout(timer);
        drainTimer = setTimeout(() => {
          reaping = this.reapSession(pidFile);
          void reaping.then(() => channel.close());
        }, opts.drainMs ?? DRAIN_MS);
      });
    const channel = await this.openExec(wrapped, onExit);
    const closed = new Promise<void>((resolve) => channel.on("close", () => resolve()));
    const out = { stdout: "", stderr: "" };
    const keep = (key: "stdout" | "stderr", chunk: string) => {
      out[key] = (out[key] + chunk).slice(-KEEP_BYTES);
    };
    channel.setEncoding("utf8");
    channel.stderr.setEncoding("utf8");
    channel.on("data", (c: string) => {
      keep("stdout", c);
      opts.onStdout?.(c);
    });
    channel.stderr.on("data", (c: string) => {
      keep("stderr", c);
      opts.onStderr?.(c);
    });
    if (typeof opts.stdin === "string") channel.end(opts.stdin);
    else if (opts.stdin) opts.stdin.pipe(channel);
    else channel.end();

    if (opts.timeoutMs) {
      timer = setTimeout(() => {
        timedOut = true;
        // The kill runs on its own channel; if the guest is too far gone to take it, closing
        // our channel still ends the wait.
        this.openExec(`kill -s KILL -- -$(cat ${pidFile})`)
          .then((k) => k.on("close", () => channel.close()).resume())
          .catch(() => channel.close());
        setTimeout(() => channel.close(), 5000).unref();
      }, opts.timeoutMs);
    }
    await closed;
    clearTimeout(timer);
    clearTimeout(drainTimer);
    const leftover = reaping ? await reaping : undefined;
    // The channel closes before the connection's loss is known when both end together: one tick.
    if (!exited && !timedOut && !this.lostBy) await new Promise((r) => setImmediate(r));
    this.openExec(`rm -f ${pidFile}`)
      .then((c) => c.resume())
      .catch(() => {});
    const result: ExecResult = {
      exitCode: timedOut ? undefined : code,
      signal,
      timedOut,
      ...out,
      durationMs: Date.now() - started,
    };
    if (leftover) result.leftover = leftover;
    if (!exited && !timedOut && this.lostBy) result.channelLost = this.lostBy;
    return result;
  }

  /**
   * Names and kills what is left of an exited command's session (its shell's pid is the session
   * id: the 4th field after the last ") " of /proc/<pid>/stat) and process group. One sed reads
   * every stat file: under emulation each exec in the guest costs ~0.1-0.2 s. `kill -s KILL --`
   * is the form both dash and bash take. Resolves with "<pid> <command line>" lines: what was
   * listed within REAP_MS when the guest is slow to answer.
   */
  private reapSession(pidFile: string): Promise<string[]> {
    const script = `read p < ${pidFile} || exit 0
case $p in ''|*[!0-9]*) exit 0;; esac
pids=$(sed -n "s/^\\([0-9]*\\) .*) [^ ]* [^ ]* [^ ]* $p .*/\\1/p" /proc/[0-9]*/stat 2>/dev/null)
n=0
for q in $pids; do
  n=$((n + 1)); [ $n -gt ${LEFTOVER_MAX} ] && break
  c=$(tr '\\0' ' ' < /proc/$q/cmdline 2>/dev/null)
  [ -n "$c" ] || read c < /proc/$q/comm 2>/dev/null || c=?
  printf '%s %s\\n' "$q" "\${c% }"
done
kill -s KILL -- -$p $pids 2>/dev/null
exit 0`;
    return new Promise((resolve) => {
      let listed = "";
      const done = () => {
        clearTimeout(bound);
        resolve(
          listed
            .split("\n")
            .map((l) => l.trim())
            .filter(Boolean),
        );
      };
      // A guest too far gone to answer still lets the command end.
      const bound = setTimeout(done, REAP_MS);
      this.openExec(script).then(
        (k) => {
          k.on("data", (c: Buffer) => {
            listed += c.toString();
          });
          k.stderr.resume();
          k.on("close", done);
        },
        () => done(),
      );
    });
  }

  /**
   * Copies a local file or directory into `remoteDir` (created if missing), as `remoteDir/<name>`
   * (default: the local base name). Git metadata stays behind.
   */
  async copyIn(
    localPath: string,
    remoteDir: string,
    name = basename(localPath),
    /** Only these paths (relative to a directory `localPath`); default: everything but .git. */
    files?: string[],
  ): Promise<void> {
    const channel = await this.openExec(
      `mkdir -p ${shellQuote(remoteDir)} && tar -xf - -C ${shellQuote(remoteDir)}`,
    );
    const done = channelResult(channel, `copy ${localPath} into the guest`);
    channel.resume(); // nothing to read, but the channel only closes once its output is drained
    const archive = (await stat(localPath)).isDirectory()
      ? tar.c(
          { cwd: localPath, prefix: name, portable: true, filter: (p) => !p.split("/").includes(".git") },
          files ?? (await readdir(localPath)),
        )
      : tar.c({ cwd: dirname(localPath), portable: true }, [basename(localPath)]);
    await settleBoth(pipeline(archive, channel), done);
  }

  /**
   * Copies a guest file or directory into the local directory `localDir` (as `localDir/<base
   * name>`). The guest is root and its tar is whatever it says it is: the stream is extracted by
   * {@link safeExtract} (no owners, safe modes, no special files, nothing out of the tree), and
   * what it refused is returned.
   */
  async copyOut(remotePath: string, localDir: string): Promise<ExtractResult> {
    const name = basename(remotePath);
    const channel = await this.openExec(
      `tar -cf - -C ${shellQuote(dirname(remotePath))} ${shellQuote(name)}`,
    );
    const done = channelResult(channel, `copy ${remotePath} out of the guest`);
    return settleBoth(safeExtract(channel, localDir, { tree: name }), done);
  }

  /** An interactive login shell wired to this process's terminal; resolves with its exit code. */
  interactive(): Promise<number> {
    return new Promise((resolve, reject) => {
      const { stdin, stdout } = process;
      this.client.shell(
        { term: process.env.TERM ?? "xterm", rows: stdout.rows, cols: stdout.columns },
        (err, ch) => {
          if (err) return reject(err);
          stdin.setRawMode?.(true);
          stdin.pipe(ch);
          ch.pipe(stdout);
          ch.stderr.pipe(process.stderr);
          const resize = () => ch.setWindow(stdout.rows, stdout.columns, 0, 0);
          stdout.on("resize", resize);
          let code = 0;
          ch.on("exit", (c: number | null) => {
            code = c ?? 1;
          });
          ch.on("close", () => {
            stdout.off("resize", resize);
            stdin.unpipe(ch);
            stdin.setRawMode?.(false);
            stdin.pause();
            resolve(code);
          });
        },
      );
    });
  }

  /**
   * `onOpen` runs the moment the channel opens. Listeners for plain events ("exit") must be in
   * place by then: the packets after the open can be parsed in the same turn, before an awaiting
   * caller resumes, and ssh2 does not keep an "exit" nobody listened to. (Stream data and "close"
   * wait for their reader.)
   */
  private openExec(command: string, onOpen?: (channel: ClientChannel) => void): Promise<ClientChannel> {
    return new Promise((resolve, reject) =>
      this.client.exec(command, (err, channel) => {
        if (err) return reject(err);
        channel.on("exit", (c: number | null) => exitCodes.set(channel, c));
        onOpen?.(channel);
        resolve(channel);
      }),
    );
  }
}

/** Exit codes of the channels openExec opened (null: ended by a signal), recorded as they arrive. */
const exitCodes = new WeakMap<ClientChannel, number | null>();

/** Waits for both sides of a copy; the remote side's error (it says why) wins over the stream's. */
async function settleBoth<T>(stream: Promise<T>, remote: Promise<void>): Promise<T> {
  const [s, r] = await Promise.allSettled([stream, remote]);
  if (r.status === "rejected") throw r.reason;
  if (s.status === "rejected") throw s.reason;
  return s.value;
}

/** Resolves when a copy's remote side exits 0; rejects with its stderr otherwise. */
function channelResult(channel: ClientChannel, what: string): Promise<void> {
  let stderr = "";
  channel.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4096);
  });
  return new Promise((resolve, reject) =>
    channel.on("close", () => {
      const code = exitCodes.get(channel) ?? null;
      if (code === 0) resolve();
      else reject(new Error(`${what} failed (exit ${code}): ${stderr.trim()}`));
    }),
  );
}
