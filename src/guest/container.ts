import type { Stats } from "node:fs";
import { copyFile, lstat, mkdir, realpath, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as tar from "tar";
import { type ExtractResult, type Refusal, safeExtract } from "../util/safe-extract.js";
import { startOwned } from "../vm/processes.js";
import type { ExecOptions, ExecResult } from "./ssh.js";

/**
 * A machine's userland without its kernel, for builders when no VM can run at native speed.
 *
 * Why: without KVM every instruction of an emulated machine is translated, and compilers run
 * ~50x slower than on the host (libs' modern probe: over an hour instead of three minutes).
 * A builder needs the machine's distribution, packages and compilers, not its kernel, so its
 * command runs in a container of the same root disk: natively for the host's architecture,
 * through qemu-user (binfmt_misc) for the other one (~4x faster than a whole emulated machine).
 *
 * Each command gets fresh private namespaces (mount, PID, IPC, UTS, and network unless the machine
 * may reach the internet): the cached disk is mounted read-only under an overlay whose upper layer
 * lives in `workDir` and carries the builder's files from one command to the next. Nothing stays
 * mounted between commands, so nothing can leak when kmatrix dies. Needs root (loop and overlay
 * mounts); test machines always boot as VMs.
 */
export class ContainerSession {
  private readonly upper: string;

  private constructor(
    private readonly disk: string,
    private readonly workDir: string,
    private readonly network: boolean,
  ) {
    this.upper = join(workDir, "upper");
  }

  static async start(opts: { disk: string; workDir: string; internet?: boolean }): Promise<ContainerSession> {
    for (const d of ["upper", "work", "lower", "root"])
      await mkdir(join(opts.workDir, d), { recursive: true });
    const session = new ContainerSession(opts.disk, opts.workDir, opts.internet ?? false);
    const probe = await session.run("true", { timeoutMs: 60_000 });
    if (probe.exitCode !== 0)
      throw new Error(`cannot enter a container of ${opts.disk}: ${probe.stderr.trim().split("\n").at(-1)}`);
    return session;
  }

  /**
   * Runs a shell command inside; the whole namespace dies with it, on a timeout too. Failing to
   * enter the container throws (a harness error), so it never reads as the command's exit code.
   */
  async run(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const started = Date.now();
    // The setup is a fixed script; paths and the command are arguments, never parsed by a shell
    // on the host (the command runs under the container's own sh).
    const child = startOwned(
      "unshare",
      [
        "--mount",
        "--pid",
        "--ipc",
        "--uts",
        ...(this.network ? [] : ["--net"]),
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SETUP,
        "kmatrix-container",
        this.disk,
        ...["lower", "upper", "work", "root"].map((d) => join(this.workDir, d)),
        command,
      ],
      {
        reject: false,
        ...(typeof opts.stdin === "string" ? { input: opts.stdin } : { stdin: opts.stdin ?? "ignore" }),
        timeout: opts.timeoutMs,
        killSignal: "SIGKILL",
        encoding: "utf8",
        extendEnv: false,
        env: { PATH: GUEST_PATH, HOME: "/root", LANG: "C.UTF-8", TERM: "dumb" },
      },
    );
    child.stdout?.on("data", (c: Buffer | string) => opts.onStdout?.(String(c)));
    child.stderr?.on("data", (c: Buffer | string) => opts.onStderr?.(String(c)));
    const r = await child;
    const setupFailure = String(r.stderr ?? "")
      .split("\n")
      .find((l) => l.startsWith(SETUP_FAILED));
    if (r.exitCode === 125 && setupFailure) throw new Error(setupFailure);
    return {
      exitCode: r.timedOut ? undefined : r.exitCode,
      signal: r.timedOut ? undefined : r.signal,
      timedOut: r.timedOut,
      stdout: String(r.stdout ?? ""),
      stderr: String(r.stderr ?? ""),
      durationMs: Date.now() - started,
    };
  }

  /** Writes straight into the overlay's upper layer (nothing is mounted between commands). */
  async copyIn(localPath: string, remoteDir: string, name?: string, files?: string[]): Promise<void> {
    const dest = join(this.upper, remoteDir);
    await mkdir(dest, { recursive: true });
    const target = join(dest, name ?? basename(localPath));
    if (!(await stat(localPath)).isDirectory()) return copyFile(localPath, target);
    await mkdir(target, { recursive: true });
    await pipeline(
      tar.c({ cwd: localPath, portable: true, filter: (p) => !/(^|\/)\.git(\/|$)/.test(p) }, files ?? ["."]),
      tar.x({ cwd: target }),
    );
  }

  /**
   * Everything a builder writes is new, so it is all in the upper layer. The builder ran as root:
   * what it left is judged like a guest's archive (see copyOutOfUpper).
   */
  copyOut(remotePath: string, localDir: string): Promise<ExtractResult> {
    return copyOutOfUpper(this.upper, remotePath, localDir);
  }

  /**
   * Deletes the container's scratch at once: `workDir` with the overlay's upper and work layers
   * (everything the builder wrote; its artifacts were copied out before). Nothing is mounted
   * between commands, so there is nothing to unmount.
   */
  async stop(): Promise<void> {
    await rm(this.workDir, { recursive: true, force: true });
  }
}

/**
 * Copies `remotePath` of a container out of its overlay's upper layer `upper` into `localDir`
 * (as `localDir/<base name>`), through {@link safeExtract}.
 *
 * The upper layer is a host directory the builder wrote as root, so its symbolic links are the
 * builder's: `/kmatrix/out/<b>` replaced by a link to `/` names the HOST's root once looked up
 * from the host. So no symbolic link is followed: a source whose path within `upper` has one
 * (the source itself included) is refused, not copied; links inside the tree are archived as
 * links and judged by safeExtract; device nodes, FIFOs and sockets are left out and reported.
 * Nothing runs in the container between commands, so the tree cannot change while it is read.
 */
export async function copyOutOfUpper(
  upper: string,
  remotePath: string,
  localDir: string,
): Promise<ExtractResult> {
  const root = await realpath(upper);
  const src = join(root, remotePath);
  const name = basename(src);
  if (!src.startsWith(`${root}/`) || name === "")
    return { refused: [{ path: remotePath, why: "not a path inside the container" }] };
  // Walk down from the upper layer without following anything: the first link met refuses the copy.
  for (let at = root; at !== src; ) {
    at = join(at, src.slice(at.length + 1).split("/")[0] as string);
    if ((await lstat(at)).isSymbolicLink())
      return {
        refused: [
          {
            path: remotePath,
            why: `${at.slice(root.length)} is a symbolic link in the container (not followed)`,
          },
        ],
      };
  }
  const refused: Refusal[] = [];
  const archive = tar.c(
    {
      cwd: dirname(src),
      portable: true,
      // Default, spelled out: links are archived as links, never followed to what they name.
      follow: false,
      // node-tar leaves special files out silently; say so.
      filter: (path, st) => {
        if (!("isFile" in st) || st.isFile() || st.isDirectory() || st.isSymbolicLink()) return true;
        refused.push({ path, why: `${specialKind(st)} not allowed` });
        return false;
      },
    },
    [name],
  );
  const extracted = await safeExtract(archive, localDir, { tree: name });
  return { refused: [...refused, ...extracted.refused] };
}

function specialKind(st: Stats): string {
  if (st.isCharacterDevice()) return "character device";
  if (st.isBlockDevice()) return "block device";
  if (st.isFIFO()) return "FIFO";
  if (st.isSocket()) return "socket";
  return "special file";
}

const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Printed when entering the container fails: the harness's fault, never the builder command's. */
const SETUP_FAILED = "kmatrix-container: setup failed:";

/** $1 disk, $2 lower, $3 upper, $4 work, $5 root, $6 the command. */
const SETUP = `fail() { echo "${SETUP_FAILED} $*" >&2; exit 125; }
mount -o loop,ro "$1" "$2" || fail "loop mount of $1"
mount -t overlay overlay -o "lowerdir=$2,upperdir=$3,workdir=$4" "$5" || fail "overlay mount"
mount -t proc proc "$5/proc" || fail "proc"
mount -t sysfs -o ro sysfs "$5/sys" || fail "sysfs"
mount --rbind /dev "$5/dev" || fail "dev"
mount -t tmpfs tmpfs "$5/tmp" || fail "tmp"
mount -t tmpfs tmpfs "$5/run" || fail "run"
hostname kmatrix-builder
ip link set lo up 2>/dev/null || true
exec chroot "$5" /bin/sh -c "$6"
`;
