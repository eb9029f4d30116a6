import type { Stats } from "node:fs";
import {
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  readdir,
  realpath,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as tar from "tar";
import { CROSS_MOUNT } from "../images/cross/toolchain.js";
import { type ExtractResult, type Refusal, safeExtract } from "../util/safe-extract.js";
import { startOwned } from "../vm/processes.js";
import type { ExecOptions, ExecResult } from "./ssh.js";

/**
 * A machine's userland without its kernel, in a sandbox, for builders when no VM can run at
 * native speed.
 *
 * Why: without KVM every instruction of an emulated machine is translated, and compilers run
 * ~50x slower than on the host (libs' modern probe: over an hour instead of three minutes).
 * A builder needs the machine's distribution, packages and compilers, not its kernel, so its
 * command runs in a sandbox of the same root disk: natively for the host's architecture, through
 * qemu-user (binfmt_misc) for the other one (~4x faster than a whole emulated machine).
 *
 * A builder's command is anyone's code (a pull request in CI), so the sandbox is built to hold it
 * (bubblewrap, run unprivileged):
 * - Root inside is uid {@link SANDBOX_UID} outside, a dedicated unprivileged uid: bwrap itself
 *   runs as that uid (`setpriv --reuid`), so its user namespace maps only that uid, and nothing
 *   in it has a capability outside its own namespaces (bwrap drops them all inside as well, and
 *   `--disable-userns` forbids nested user namespaces). The image's files belong to real root and
 *   show as `nobody` inside: readable and runnable, never writable.
 * - Fresh PID, IPC, UTS, cgroup and network namespaces for every command (`--unshare-all`);
 *   the network has only a loopback, or with `vm.internet` a user-mode network (slirp4netns,
 *   unprivileged too, host loopback refused) — never the host's network namespace.
 * - A minimal /dev (null, zero, full, random, urandom, tty, pts, shm), a new /proc whose
 *   /proc/sys, sysrq-trigger and friends belong to real root (read-only inside), no /sys, tmpfs
 *   /tmp and /run; bwrap's processes die with kmatrix (`--die-with-parent`) and have no terminal
 *   (`--new-session`).
 *
 * The root filesystem: each command runs `unshare --mount` (as root) into a private mount
 * namespace that lives exactly as long as the command: the cached disk is loop-mounted there
 * read-only under an overlay whose upper layer (`workDir/upper`, owned by the sandbox uid)
 * carries the builder's files from one command to the next, and the merged tree is mounted on that
 * namespace's /run, where bwrap (unprivileged: it cannot walk into root's run directory) binds it
 * as its "/". Nothing is mounted between commands or in the host's namespace, so nothing can stay
 * mounted when kmatrix dies (the namespace, and with it the loop device, goes with bwrap's
 * processes) and `kmatrix clean` only has files to delete. Mounting per command is the simplest
 * design that cannot leak a mount, and cheap: a whole command (`true`) takes tens of milliseconds,
 * as in the old container (bench/sandbox.ts), where a long-lived process holding the mounts would
 * need its own lifetime management, and an unpacked copy of each image would add its ~1 GB again
 * to the cache. That mount is the only part that still needs root.
 */
export class ContainerSession {
  private readonly upper: string;

  private constructor(
    private readonly disk: string,
    private readonly workDir: string,
    private readonly network: boolean,
    private readonly toolchain: string | undefined,
    private readonly qemuCpu: string | undefined,
  ) {
    this.upper = join(workDir, "upper");
  }

  static async start(opts: {
    disk: string;
    workDir: string;
    internet?: boolean;
    /**
     * A host directory mounted read-only (nosuid, nodev) at CROSS_MOUNT (images/cross), and the
     * command that shows it works there.
     */
    toolchain?: { dir: string; check: string };
    /** QEMU_CPU for programs of the other architecture (qemu-user's default `max` emulates slow pointer authentication). */
    qemuCpu?: string;
  }): Promise<ContainerSession> {
    // Root's alone: an upper layer (owned by the sandbox uid, which every sandbox shares) is
    // reached only through its own sandbox's root.
    await mkdir(opts.workDir, { recursive: true });
    await chmod(opts.workDir, 0o700);
    for (const d of ["work", "lower"]) await mkdir(join(opts.workDir, d), { recursive: true });
    const session = new ContainerSession(
      opts.disk,
      opts.workDir,
      opts.internet ?? false,
      opts.toolchain?.dir,
      opts.qemuCpu,
    );
    // The overlay's upper layer is the sandbox's "/" (its root owns it) with a home directory
    // ($HOME=/root; the image's /root is real root's); the rest of the image stays read-only.
    await session.ownedDir(session.upper, 0o755);
    await session.ownedDir(join(session.upper, "root"), 0o700);
    // The toolchain's mount point: a directory of the upper layer, so the mount never lands on
    // whatever the image has at that path.
    if (opts.toolchain) await session.ownedDir(join(session.upper, CROSS_MOUNT), 0o755);
    if (session.network) {
      // slirp4netns's DNS forwarder; real root's file, so the builder cannot change it.
      await mkdir(join(session.upper, "etc"), { recursive: true, mode: 0o755 });
      await writeFile(join(session.upper, "etc", "resolv.conf"), `nameserver ${SLIRP_DNS}\n`, {
        mode: 0o644,
      });
    }
    const probe = await session.run(opts.toolchain?.check ?? "true", { timeoutMs: 60_000 });
    if (probe.exitCode !== 0)
      throw new Error(
        `cannot enter a sandbox of ${opts.disk}${opts.toolchain ? " with its cross toolchain" : ""}: ${probe.stderr.trim().split("\n").at(-1) || `exit ${probe.exitCode ?? probe.signal}`}`,
      );
    return session;
  }

  /**
   * Runs a shell command inside; the whole sandbox dies with it, on a timeout too. Failing to
   * enter the sandbox throws (a harness error), so it never reads as the command's exit code.
   */
  async run(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const started = Date.now();
    const bwrap = [
      "--unshare-all",
      // With the internet, the network namespace is the one SETUP's `unshare --net` made, where
      // slirp4netns plugs in (bwrap's own would belong to a user namespace slirp4netns cannot enter).
      ...(this.network ? ["--share-net"] : []),
      "--unshare-user",
      "--disable-userns",
      "--uid",
      "0",
      "--gid",
      "0",
      "--hostname",
      "kmatrix-builder",
      "--dev",
      "/dev",
      "--proc",
      "/proc",
      "--tmpfs",
      "/tmp",
      "--tmpfs",
      "/run",
      "--die-with-parent",
      "--new-session",
      "--cap-drop",
      "ALL",
      "--chdir",
      "/",
      // fd 4: bwrap says it has started (slirp4netns may attach); fd 5: it waits for the network.
      ...(this.network ? ["--info-fd", "4", "--block-fd", "5"] : []),
    ];
    const stdin = opts.stdin === undefined ? "ignore" : "pipe";
    // bwrap's --block-fd: one byte once the network is up (an iterable: execa pipes it in, and
    // waits for its end); without a network it ends only once bwrap is dead.
    let release: (up: boolean) => void = () => {};
    const gate = new Promise<boolean>((resolve) => {
      release = resolve;
    });
    async function* blockFd() {
      if (await gate) yield "1";
    }
    // The set-up is a fixed script; paths and the command are arguments, never parsed by a shell
    // on the host (the command runs under the sandbox's own sh).
    const child = startOwned(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "--",
        "bash",
        "-c",
        SETUP,
        "kmatrix-sandbox",
        this.disk,
        ...["lower", "upper", "work"].map((d) => join(this.workDir, d)),
        String(SANDBOX_UID),
        String(SANDBOX_GID),
        this.network ? "user-net" : "no-net",
        this.toolchain ?? "-",
        ...bwrap,
        "--",
        "/bin/sh",
        "-c",
        ENTER,
        "kmatrix-sandbox",
        command,
      ],
      {
        reject: false,
        // fd 3: one byte once the sandbox is up, closed before the command runs (see ENTER).
        stdio: this.network
          ? [stdin, "pipe", "pipe", "pipe", "pipe", blockFd()]
          : [stdin, "pipe", "pipe", "pipe"],
        ...(typeof opts.stdin === "string" && { input: opts.stdin }),
        timeout: opts.timeoutMs,
        killSignal: "SIGKILL",
        encoding: "utf8",
        extendEnv: false,
        env: {
          PATH: GUEST_PATH,
          HOME: "/root",
          LANG: "C.UTF-8",
          TERM: "dumb",
          ...(this.qemuCpu && { QEMU_CPU: this.qemuCpu }),
        },
      },
    );
    if (opts.stdin !== undefined && typeof opts.stdin !== "string" && child.stdin)
      opts.stdin.pipe(child.stdin).on("error", () => {});
    child.stdout?.on("data", (c: Buffer | string) => opts.onStdout?.(String(c)));
    child.stderr?.on("data", (c: Buffer | string) => opts.onStderr?.(String(c)));
    let network: Promise<UserNetwork | undefined> = Promise.resolve(undefined);
    if (this.network) {
      network = userNetwork(child.pid, child.stdio[4] as Readable).then(
        (net) => {
          release(true);
          return net;
        },
        (err: Error) => {
          // Still blocked before the command: it never runs without its network.
          if (child.exitCode !== null || child.signalCode !== null) release(false);
          else child.once("exit", () => release(false));
          child.kill("SIGKILL");
          throw err;
        },
      );
      // Awaited below, once the command has ended.
      network.catch(() => {});
    }
    const r = await child;
    const net = await network.catch((err: Error) => err);
    if (!(net instanceof Error)) net?.stop();
    // Only the sandbox's own shell writes fd 3, before the command runs: a command cannot fake
    // a harness failure by printing bwrap's or the set-up's words.
    if (String(r.stdio[3] ?? "") !== "1" || net instanceof Error) {
      const why = String(r.stderr ?? "")
        .split("\n")
        .find((l) => l.startsWith(SETUP_FAILED) || l.startsWith("bwrap: ") || l.startsWith("setpriv: "));
      const network = net instanceof Error ? `user-mode network: ${net.message}` : undefined;
      const how = r.timedOut ? "timed out" : `exit ${r.exitCode ?? r.signal ?? r.shortMessage}`;
      throw new Error(`${SETUP_FAILED} ${[why, network].filter(Boolean).join("; ") || how}`);
    }
    return {
      exitCode: r.timedOut ? undefined : r.exitCode,
      signal: r.timedOut ? undefined : r.signal,
      timedOut: r.timedOut,
      stdout: String(r.stdout ?? ""),
      stderr: String(r.stderr ?? ""),
      durationMs: Date.now() - started,
    };
  }

  /**
   * Writes straight into the overlay's upper layer (nothing is mounted between commands), owned
   * by the sandbox's root. The upper layer holds what earlier commands wrote: no symbolic link
   * on the way to `remoteDir` is followed (it would name a host path).
   */
  async copyIn(localPath: string, remoteDir: string, name?: string, files?: string[]): Promise<void> {
    let dest = this.upper;
    for (const part of join(remoteDir, name ?? basename(localPath))
      .split("/")
      .filter(Boolean)) {
      dest = join(dest, part);
      const st = await lstat(dest).catch(() => undefined);
      if (st?.isSymbolicLink())
        throw new Error(`copy into the sandbox: ${dest.slice(this.upper.length)} is a symbolic link`);
      if (!st && dest !== join(this.upper, remoteDir, name ?? basename(localPath)))
        await this.ownedDir(dest, 0o755);
    }
    if (!(await stat(localPath)).isDirectory()) {
      await copyFile(localPath, dest);
      return chown(dest, SANDBOX_UID, SANDBOX_GID);
    }
    await this.ownedDir(dest, 0o755);
    await pipeline(
      tar.c({ cwd: localPath, portable: true, filter: (p) => !/(^|\/)\.git(\/|$)/.test(p) }, files ?? ["."]),
      tar.x({ cwd: dest, preserveOwner: false, uid: SANDBOX_UID, gid: SANDBOX_GID }),
    );
  }

  /**
   * Everything a builder writes is new, so it is all in the upper layer. The builder ran as the
   * sandbox's root: what it left is judged like a guest's archive (see copyOutOfUpper).
   */
  copyOut(remotePath: string, localDir: string): Promise<ExtractResult> {
    return copyOutOfUpper(this.upper, remotePath, localDir);
  }

  /** What the files under `remoteDir` are now (see copyChangesOut). */
  snapshot(remoteDir: string): Promise<Snapshot> {
    return snapshotOfUpper(this.upper, remoteDir);
  }

  /**
   * Copies out what commands wrote under `remoteDir` since `since` was taken: new and changed
   * files (and links) only, with their directories, so a compile step's outputs can follow it into
   * the machine without copying the sources it read back in. Deletions are not carried.
   */
  async copyChangesOut(remoteDir: string, since: Snapshot, localDir: string): Promise<ChangesOut> {
    const now = await this.snapshot(remoteDir);
    const changed = [...now].filter(([path, stamp]) => since.get(path) !== stamp).map(([path]) => path);
    const wanted = new Set(changed);
    await mkdir(localDir, { recursive: true });
    const result = await copyOutOfUpper(this.upper, remoteDir, localDir, (path) => wanted.has(path));
    return { ...result, files: changed };
  }

  /**
   * Deletes the sandbox's scratch at once: `workDir` with the overlay's upper and work layers
   * (everything the builder wrote; its artifacts were copied out before). Nothing is mounted
   * between commands, so there is nothing to unmount.
   */
  async stop(): Promise<void> {
    await rm(this.workDir, { recursive: true, force: true });
  }

  /** A directory of the upper layer that the sandbox's root owns (created if missing). */
  private async ownedDir(path: string, mode: number): Promise<void> {
    await mkdir(path, { recursive: true, mode });
    await chown(path, SANDBOX_UID, SANDBOX_GID);
  }
}

/**
 * The host uid and gid of the sandbox's root: unprivileged and used by nothing else, in the range
 * systemd leaves unused (after the containers' 524288–1879048191), so no other process or file of
 * the host shares it (`nobody` is shared with daemons and NFS). Every sandbox uses it; each has its
 * own namespaces and its own upper layer, which other uids cannot reach (the run directory is
 * root's, 0700 above it).
 */
export const SANDBOX_UID = 0x7000_0000;
export const SANDBOX_GID = 0x7000_0000;

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
  /** Only these files and links (paths as `<base name>/…`); directories are always walked. */
  only?: (path: string) => boolean,
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
        if ("isDirectory" in st && st.isDirectory()) return true;
        if (only && !only(path)) return false;
        if (!("isFile" in st) || st.isFile() || st.isSymbolicLink()) return true;
        refused.push({ path, why: `${specialKind(st)} not allowed` });
        return false;
      },
    },
    [name],
  );
  const extracted = await safeExtract(archive, localDir, { tree: name });
  return { refused: [...refused, ...extracted.refused] };
}

/** Path (`<base name>/…`, as copyOutOfUpper's `only` sees it) → size and times, of files and links. */
export type Snapshot = Map<string, string>;

export interface ChangesOut extends ExtractResult {
  /** The new and changed paths (`<base name>/…`). */
  files: string[];
}

/** Walks `remoteDir` of the upper layer without following links (they are the sandbox's). */
async function snapshotOfUpper(upper: string, remoteDir: string): Promise<Snapshot> {
  const snapshot: Snapshot = new Map();
  const root = join(upper, remoteDir);
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory()) await walk(join(dir, entry.name), path);
      else if (entry.isFile() || entry.isSymbolicLink()) {
        const st = await lstat(join(dir, entry.name), { bigint: true });
        snapshot.set(path, `${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.ino}`);
      }
    }
  };
  if ((await lstat(root).catch(() => undefined))?.isDirectory()) await walk(root, basename(root));
  return snapshot;
}

function specialKind(st: Stats): string {
  if (st.isCharacterDevice()) return "character device";
  if (st.isBlockDevice()) return "block device";
  if (st.isFIFO()) return "FIFO";
  if (st.isSocket()) return "socket";
  return "special file";
}

/** slirp4netns's addresses: the guest 10.0.2.100, DNS 10.0.2.3 (the host's loopback is refused). */
const SLIRP_DNS = "10.0.2.3";

interface UserNetwork {
  stop(): void;
}

/**
 * Once bwrap has started (it writes to `--info-fd`), attaches slirp4netns to the network namespace
 * of `pid` (bwrap's own process, after SETUP's `unshare --user --net`), as the sandbox's uid: it
 * owns that user namespace, so it may enter it, and it has no privilege on the host. It runs in
 * the command's private mount namespace, which has a /dev/net/tun it may open (the host's may be
 * root's alone). Resolves once the sandbox's tap0 is configured.
 */
async function userNetwork(pid: number | undefined, info: Readable): Promise<UserNetwork> {
  let text = "";
  await new Promise<void>((resolve, reject) => {
    info.setEncoding("utf8");
    info.on("data", (c: string) => {
      text += c;
      if (/"child-pid"/.test(text)) resolve();
    });
    info.on("end", () => reject(new Error("bwrap ended before the sandbox started")));
    info.on("error", reject);
  });
  if (pid === undefined) throw new Error("no pid for bwrap");
  const slirp = startOwned(
    "nsenter",
    [
      `--mount=/proc/${pid}/ns/mnt`,
      "--",
      "setpriv",
      `--reuid=${SANDBOX_UID}`,
      `--regid=${SANDBOX_GID}`,
      "--clear-groups",
      "--inh-caps=-all",
      "--pdeathsig",
      "KILL",
      "--",
      "slirp4netns",
      "--configure",
      "--mtu=65520",
      // 10.0.2.2 is not the host's 127.0.0.1.
      "--disable-host-loopback",
      // A seccomp filter: it parses the builder's packets.
      "--enable-seccomp",
      "--ready-fd=3",
      String(pid),
      "tap0",
    ],
    { reject: false, stdio: ["ignore", "pipe", "pipe", "pipe"], encoding: "utf8" },
  );
  await new Promise<void>((resolve, reject) => {
    (slirp.stdio[3] as Readable).on("data", () => resolve());
    slirp.then((r) =>
      reject(
        new Error(
          `slirp4netns exited: ${String(r.stderr).trim().split("\n").slice(-3).join(" / ") || r.exitCode}`,
        ),
      ),
    );
  });
  return { stop: () => slirp.kill("SIGKILL") };
}

const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Printed when entering the sandbox fails: the harness's fault, never the builder command's. */
const SETUP_FAILED = "kmatrix-sandbox: setup failed:";

/**
 * bash, as root in a private mount namespace: $1 disk, $2 lower, $3 upper, $4 work, $5 uid,
 * $6 gid, $7 `user-net` or `no-net`, $8 a toolchain directory or `-`, then bwrap's arguments. bwrap runs as the sandbox's uid,
 * which cannot walk down to the run directory (root's, 0700): the merged tree is mounted on /run
 * of this namespace only (the host's /run is untouched), which it can reach. With the internet,
 * a tun device that slirp4netns (as the sandbox's uid, in this namespace) may open covers
 * /dev/net here only, and bwrap starts in a user and network namespace of that uid.
 * Descriptors above 5 that kmatrix inherited from whatever started it are closed: bwrap would
 * pass them into the sandbox.
 */
const SETUP = `fail() { echo "${SETUP_FAILED} $*" >&2; exit 125; }
mount -o loop,ro "$1" "$2" || fail "loop mount of $1"
mount -t overlay overlay -o "lowerdir=$2,upperdir=$3,workdir=$4" /run || fail "overlay mount"
[ "$8" = - ] || mount --bind "$8" "/run${CROSS_MOUNT}" || fail "toolchain mount"
[ "$8" = - ] || mount -o remount,bind,ro,nosuid,nodev "/run${CROSS_MOUNT}" || fail "toolchain mount (read-only)"
uid="$5" gid="$6" net="$7"
shift 8
for fd in /proc/self/fd/*; do fd="\${fd##*/}"; [ "$fd" -gt 5 ] && eval "exec $fd>&-"; done
[ "$net" = user-net ] || exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --pdeathsig KILL -- bwrap --bind /run / "$@"
mount -t tmpfs -o mode=0755,size=16k kmatrix-tun /dev/net || fail "tmpfs on /dev/net"
mknod -m 0666 /dev/net/tun c 10 200 || fail "/dev/net/tun"
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --pdeathsig KILL -- unshare --user --map-current-user --net -- bwrap --bind /run / "$@"
`;

/**
 * The first program in the sandbox (its own /bin/sh): says it is up on fd 3, closes the
 * descriptors kmatrix passed (3-5), then becomes the command's shell.
 */
const ENTER = 'printf 1 >&3; exec 3>&- 4>&- 5>&-; exec /bin/sh -c "$1"';
