import { readdir, stat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import ssh2, { type ClientChannel } from "ssh2";
import * as tar from "tar";
import { shellQuote } from "../util/shell-quote.js";

export interface ExecOptions {
  /** Kills the command's whole process group in the guest when it runs longer. */
  timeoutMs?: number;
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  stdin?: Readable | string;
}

export interface ExecResult {
  /** undefined when the command was killed (timeout) or the channel died. */
  exitCode: number | undefined;
  signal: string | undefined;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Output kept per stream; the rest is streamed to the callbacks only, so memory stays bounded. */
const KEEP_BYTES = 1 << 20;

let commandCounter = 0;

/**
 * The host's one SSH connection to a guest: commands with streamed output, exit codes and
 * timeouts, and file copies both ways (tar over a command channel, so no sftp-server is needed).
 */
export class GuestChannel {
  private constructor(private readonly client: ssh2.Client) {}

  static connect(opts: { port: number; privateKey: string; timeoutMs: number }): Promise<GuestChannel> {
    return new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      client.once("ready", () => resolve(new GuestChannel(client)));
      // A client can emit several errors; only the first one before "ready" matters. Later ones
      // (the VM went away) surface as failed commands and as the session's fault.
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
        keepaliveInterval: 5000,
        keepaliveCountMax: 6,
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
    const channel = await this.openExec(wrapped);
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

    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const exit = await new Promise<{ code: number | undefined; signal: string | undefined }>((resolve) => {
      let code: number | undefined;
      let signal: string | undefined;
      channel.on("exit", (c: number | null, s?: string) => {
        code = c ?? undefined;
        signal = s;
      });
      channel.on("close", () => resolve({ code, signal }));
      if (opts.timeoutMs) {
        timer = setTimeout(() => {
          timedOut = true;
          // The kill runs on its own channel; if the guest is too far gone to take it, closing
          // our channel still ends the wait.
          this.openExec(`kill -KILL -- -$(cat ${pidFile})`)
            .then((k) => k.on("close", () => channel.close()).resume())
            .catch(() => channel.close());
          setTimeout(() => channel.close(), 5000).unref();
        }, opts.timeoutMs);
      }
    });
    clearTimeout(timer);
    this.openExec(`rm -f ${pidFile}`)
      .then((c) => c.resume())
      .catch(() => {});
    return {
      exitCode: timedOut ? undefined : exit.code,
      signal: exit.signal,
      timedOut,
      ...out,
      durationMs: Date.now() - started,
    };
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

  /** Copies a guest file or directory into the local directory `localDir`. */
  async copyOut(remotePath: string, localDir: string): Promise<void> {
    const channel = await this.openExec(
      `tar -cf - -C ${shellQuote(dirname(remotePath))} ${shellQuote(basename(remotePath))}`,
    );
    const done = channelResult(channel, `copy ${remotePath} out of the guest`);
    await settleBoth(pipeline(channel, tar.x({ cwd: localDir })), done);
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

  private openExec(command: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) =>
      this.client.exec(command, (err, channel) => (err ? reject(err) : resolve(channel))),
    );
  }
}

/** Waits for both sides of a copy; the remote side's error (it says why) wins over the stream's. */
async function settleBoth(stream: Promise<void>, remote: Promise<void>): Promise<void> {
  const [s, r] = await Promise.allSettled([stream, remote]);
  if (r.status === "rejected") throw r.reason;
  if (s.status === "rejected") throw s.reason;
}

/** Resolves when a copy's remote side exits 0; rejects with its stderr otherwise. */
function channelResult(channel: ClientChannel, what: string): Promise<void> {
  let stderr = "";
  channel.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4096);
  });
  return new Promise((resolve, reject) => {
    let code: number | null = null;
    channel.on("exit", (c: number | null) => {
      code = c;
    });
    channel.on("close", () =>
      code === 0 ? resolve() : reject(new Error(`${what} failed (exit ${code}): ${stderr.trim()}`)),
    );
  });
}
