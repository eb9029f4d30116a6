/**
 * npm run bench:sandbox — what the builder sandbox (src/guest/container.ts: bubblewrap as an
 * unprivileged uid over a read-only loop mount) costs against the container it replaced (the same
 * mounts, then `unshare` + `chroot` as real root with the host's /dev: the code of kmatrix before
 * issue 13, kept here as the baseline). Needs root, like both.
 *
 * The same commands in both, on the cached debian-bookworm-6.1 image of each architecture in
 * ARCHES (default x86_64; aarch64 runs under qemu-user), alternating old and new each round
 * (ROUNDS, default 3) so that host noise hits both alike; medians of the wall time and of the CPU
 * time of the command's processes (the shell's `times`: less sensitive to a loaded host):
 *   - `true` (the fixed cost of a command: mounts, namespaces, exec), run 10 times a round;
 *   - kmod: Kbuild of kmatrix's example kernel module (drivers/kmod) against the image's headers;
 *   - C project: 48 generated C files compiled by make -j$(nproc) and linked.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import * as tar from "tar";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "../src/config/default.js";
import { parseMatrix } from "../src/config/load.js";
import type { Arch } from "../src/config/types.js";
import { ContainerSession } from "../src/guest/container.js";
import { prepareImage } from "../src/images/index.js";
import { startOwned } from "../src/vm/processes.js";

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const ARCHES = (process.env.ARCHES ?? "x86_64").split(",") as Arch[];
const TRUE_RUNS = 10;
const matrix = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
const ms = (x: number) => `${x.toFixed(0)} ms`;
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The old set-up script, verbatim: $1 disk, $2 lower, $3 upper, $4 work, $5 root, $6 the command. */
const LEGACY_SETUP = `fail() { echo "kmatrix-container: setup failed: $*" >&2; exit 125; }
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

/** What both sides offer the workloads. */
interface Side {
  copyIn(localDir: string, remoteDir: string, name: string): Promise<void>;
  /** Runs `command`; returns the CPU seconds (user + system) of the processes it waited for. */
  run(command: string): Promise<number>;
  stop(): Promise<void>;
}

/** The command, then the shell's `times` (its children's CPU time on the second line). */
const timed = (command: string) => `${command}\nrc=$?; times; exit $rc`;

function childCpu(stdout: string): number {
  const line = stdout.trim().split("\n").at(-1) ?? "";
  const parts = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  if (parts.length !== 2) throw new Error(`no times in ${JSON.stringify(line)}`);
  return (parts[0] as number) + (parts[1] as number);
}

/** The builder container before issue 13: real root, all capabilities, the host's /dev. */
class LegacyContainer implements Side {
  private constructor(
    private readonly disk: string,
    private readonly workDir: string,
  ) {}

  static async start(disk: string, workDir: string): Promise<LegacyContainer> {
    for (const d of ["upper", "work", "lower", "root"]) await mkdir(join(workDir, d), { recursive: true });
    return new LegacyContainer(disk, workDir);
  }

  async copyIn(localDir: string, remoteDir: string, name: string): Promise<void> {
    const target = join(this.workDir, "upper", remoteDir, name);
    await mkdir(target, { recursive: true });
    await tar.x({ cwd: target, file: await tarOf(localDir) });
  }

  async run(command: string): Promise<number> {
    const r = await startOwned(
      "unshare",
      [
        ...["--mount", "--pid", "--ipc", "--uts", "--net", "--fork", "--kill-child"],
        ...["--propagation", "private", "--", "sh", "-c", LEGACY_SETUP, "kmatrix-container", this.disk],
        ...["lower", "upper", "work", "root"].map((d) => join(this.workDir, d)),
        timed(command),
      ],
      { reject: false, encoding: "utf8", env: { PATH: GUEST_PATH, HOME: "/root", LANG: "C.UTF-8" } },
    );
    if (r.exitCode !== 0) throw new Error(`old container: ${command}: exit ${r.exitCode}\n${r.stderr}`);
    return childCpu(r.stdout);
  }

  async stop(): Promise<void> {
    await rm(this.workDir, { recursive: true, force: true });
  }
}

class Sandbox implements Side {
  private constructor(private readonly session: ContainerSession) {}

  static async start(disk: string, workDir: string): Promise<Sandbox> {
    return new Sandbox(await ContainerSession.start({ disk, workDir }));
  }

  copyIn(localDir: string, remoteDir: string, name: string): Promise<void> {
    return this.session.copyIn(localDir, remoteDir, name);
  }

  async run(command: string): Promise<number> {
    const r = await this.session.run(timed(command), { timeoutMs: 1_800_000 });
    if (r.exitCode !== 0) throw new Error(`sandbox: ${command}: exit ${r.exitCode}\n${r.stderr}`);
    return childCpu(r.stdout);
  }

  stop(): Promise<void> {
    return this.session.stop();
  }
}

const tarballs = new Map<string, string>();
async function tarOf(dir: string): Promise<string> {
  const known = tarballs.get(dir);
  if (known) return known;
  const file = join(await mkdtemp(join(tmpdir(), "kmx-bench-tar-")), "src.tar");
  await tar.c({ cwd: dir, portable: true, file }, ["."]);
  tarballs.set(dir, file);
  return file;
}

/** 48 C files of a few functions each, and a Makefile that builds them in parallel. */
async function cProject(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kmx-bench-cproj-"));
  const n = 48;
  for (let i = 0; i < n; i++) {
    const fns = Array.from(
      { length: 20 },
      (_, j) =>
        `static int table_${j}[256];\nint f${i}_${j}(int x) { for (int k = 0; k < 256; k++) table_${j}[k] = (x * k + ${j}) % 251; return table_${j}[x & 255]; }`,
    );
    await writeFile(
      join(dir, `u${i}.c`),
      `#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n${fns.join("\n")}\nint u${i}(void) { return f${i}_0(${i}); }\n`,
    );
  }
  const calls = Array.from({ length: n }, (_, i) => `int u${i}(void);`).join("\n");
  const sum = Array.from({ length: n }, (_, i) => `u${i}()`).join(" + ");
  await writeFile(
    join(dir, "main.c"),
    `#include <stdio.h>\n${calls}\nint main(void) { printf("%d\\n", ${sum}); return 0; }\n`,
  );
  await writeFile(
    join(dir, "Makefile"),
    `SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\nCFLAGS := -O2\napp: $(OBJS)\n\t$(CC) -o $@ $^\nclean:\n\trm -f *.o app\n`,
  );
  return dir;
}

const WORKLOADS: { name: string; command: string }[] = [
  { name: `true x${TRUE_RUNS}`, command: "true" },
  {
    name: "kmod (Kbuild)",
    command:
      "cd /kmatrix/src/drivers/kmod && make -s -C /lib/modules/$(ls /lib/modules | head -n 1)/build M=$PWD clean >/dev/null && make -s -C /lib/modules/$(ls /lib/modules | head -n 1)/build M=$PWD modules -j$(nproc)",
  },
  { name: "C project (48 files)", command: "cd /kmatrix/src/cproj && make -s clean && make -s -j$(nproc)" },
];

const scratch = await mkdtemp(join(tmpdir(), "kmx-bench-sandbox-"));
const rows: string[] = [];
try {
  const cproj = await cProject();
  for (const arch of ARCHES) {
    const machine = matrix.machines.find((m) => m.name === "debian-bookworm-6.1" && m.arch === arch);
    if (!machine) throw new Error(`no debian-bookworm-6.1@${arch}`);
    const image = await prepareImage(machine, { archive: matrix.archive, log: (l) => console.error(l) });
    const times = new Map<string, { old: number[]; sandbox: number[] }>(
      WORKLOADS.map((w) => [w.name, { old: [], sandbox: [] }]),
    );
    const cpu = new Map<string, { old: number[]; sandbox: number[] }>(
      WORKLOADS.map((w) => [w.name, { old: [], sandbox: [] }]),
    );
    const starts = { old: [] as number[], sandbox: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      for (const kind of ["old", "sandbox"] as const) {
        const t0 = performance.now();
        const side: Side =
          kind === "old"
            ? await LegacyContainer.start(image.disk, join(scratch, `${arch}-${kind}-${round}`))
            : await Sandbox.start(image.disk, join(scratch, `${arch}-${kind}-${round}`));
        await side.copyIn(join(ROOT, "drivers"), "/kmatrix/src", "drivers");
        await side.copyIn(cproj, "/kmatrix/src", "cproj");
        starts[kind].push(performance.now() - t0);
        try {
          for (const w of WORKLOADS) {
            const runs = w.command === "true" ? TRUE_RUNS : 1;
            const t1 = performance.now();
            let seconds = 0;
            for (let i = 0; i < runs; i++) seconds += await side.run(w.command);
            times.get(w.name)?.[kind].push(performance.now() - t1);
            cpu.get(w.name)?.[kind].push(seconds * 1000);
          }
        } finally {
          await side.stop();
        }
      }
      console.error(`${arch}: round ${round + 1}/${ROUNDS} done`);
    }
    rows.push(
      `${arch} start + copy-in: old ${ms(median(starts.old))}, sandbox ${ms(median(starts.sandbox))} (the sandbox's start runs one probe command)`,
    );
    const row = (what: string, name: string, t: { old: number[]; sandbox: number[] }) => {
      const o = median(t.old);
      const n = median(t.sandbox);
      const change = o > 0 ? `${n >= o ? "+" : ""}${(((n - o) / o) * 100).toFixed(1)}%` : "";
      rows.push(
        `${arch} ${name.padEnd(22)} ${what} old ${ms(o).padStart(9)}  sandbox ${ms(n).padStart(9)}  ${change.padStart(7)}  (old ${t.old.map(ms).join(", ")}; sandbox ${t.sandbox.map(ms).join(", ")})`,
      );
    };
    for (const [name, t] of times) row("wall", name, t);
    for (const [name, t] of cpu) row("CPU ", name, t);
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}
console.log(
  `\nsandbox benchmark (${ROUNDS} rounds, medians; old = unshare + chroot as root, before issue 13)`,
);
for (const r of rows) console.log(r);
