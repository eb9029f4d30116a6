import { type Command, Option } from "commander";
import { describeMachines, loadMatrix, selectMachines } from "../config/load.js";
import { ARCHES, type Arch, type Matrix } from "../config/types.js";
import { removeStaleTemps } from "../images/cache.js";
import { MARKDOWN_STYLES, type MarkdownStyle } from "../report/index.js";
import { parseShard } from "../run/shard.js";
import { UsageError } from "../util/errors.js";
import { VERSION } from "../util/package-root.js";
import { hostArch } from "../vm/accel.js";
import { cleanStaleRuns } from "../vm/run-dirs.js";
import { runDoctor } from "./doctor.js";
import { buildImages, imageKeys, listImages, pruneImages } from "./images.js";
import { mergeCommand } from "./merge.js";
import { diffCommand, reportCommand } from "./report.js";
import { runCommand } from "./run.js";
import { runShell } from "./shell.js";

interface MatrixFlags {
  config?: string;
  arch?: Arch;
  machine?: string[];
}

const configOption = () =>
  new Option("-c, --config <file>", "matrix file (default: ./kmatrix.yaml, else the embedded default)");
const archOption = () => new Option("-a, --arch <arch>", "only this architecture").choices(ARCHES);
const machineOption = () =>
  new Option("-m, --machine <glob>", "only machines whose name matches (repeatable)").argParser(
    (value: string, previous: string[] = []) => [...previous, value],
  );

async function selected(
  flags: MatrixFlags,
  names: string[] = [],
): Promise<{ matrix: Matrix; machines: ReturnType<typeof selectMachines> }> {
  const matrix = await loadMatrix({ configPath: flags.config });
  const patterns = [...(flags.machine ?? []), ...names];
  return {
    matrix,
    machines: selectMachines(matrix, { arch: flags.arch, patterns: patterns.length ? patterns : undefined }),
  };
}

/** Parser of a repeatable `key=value` option into a record. */
function keyValue(flag: string, shape: string) {
  return (value: string, previous: Record<string, string> = {}) => {
    const eq = value.indexOf("=");
    if (eq < 1) throw new UsageError(`${flag}: expected ${shape}, got "${value}"`);
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  };
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--jobs: expected a positive integer, got "${value}"`);
  return n;
}

export function registerCommands(program: Command): void {
  program.version(VERSION);

  program
    .command("machines")
    .description("list the machines of the matrix")
    .addOption(configOption())
    .addOption(archOption())
    .addOption(machineOption())
    .option("--json", "machine-readable output")
    .action(async (flags: MatrixFlags & { json?: boolean }) => {
      const { machines } = await selected(flags);
      console.log(flags.json ? JSON.stringify(machines, null, 2) : describeMachines(machines));
    });

  const images = program.command("images").description("build, list and prune the cached machine images");
  images
    .command("build [machines...]")
    .description("build (or find in the cache) the images of the selected machines")
    .addOption(configOption())
    .addOption(archOption())
    .addOption(machineOption())
    .option("--refresh", "re-resolve the newest kernels from the archive now")
    .action(async (names: string[], flags: MatrixFlags & { refresh?: boolean }) => {
      const { matrix, machines } = await selected(flags, names);
      await buildImages(matrix, machines, { refresh: flags.refresh });
    });
  images
    .command("keys [machines...]")
    .description(
      "the cache entries (named by their recipes' digests) of the selected machines' images; builds nothing",
    )
    .addOption(configOption())
    .addOption(archOption())
    .addOption(machineOption())
    .option("--json", "machine-readable output (with the cache's directory)")
    .action(async (names: string[], flags: MatrixFlags & { json?: boolean }) => {
      const { matrix, machines } = await selected(flags, names);
      await imageKeys(matrix, machines, flags);
    });
  images
    .command("list")
    .description("list cached images")
    .option("--json", "machine-readable output")
    .action(async (flags: { json?: boolean }) => listImages(flags));
  images
    .command("prune")
    .description("remove cached images that the matrix no longer uses")
    .addOption(configOption())
    .option("--dry-run", "only say what would be removed")
    .action(async (flags: { config?: string; dryRun?: boolean }) => {
      const { matrix } = await selected(flags);
      // Every machine's images are in use, builder-only ones' too (selectMachines leaves those out).
      await pruneImages(matrix, matrix.machines, flags);
    });

  program
    .command("run")
    .description("run a test plan over the matrix and record a verdict per machine and test")
    .addOption(configOption())
    .option("-p, --plan <name|file>", "a built-in plan name or a plan file", "example")
    .addOption(archOption())
    .addOption(machineOption())
    .option("-o, --output <dir>", "results directory (default: ./kmatrix-out/<run-id>)")
    .option("--resume <dir>", "continue an interrupted run: keep its verdicts, run the rest")
    .addOption(
      new Option("-j, --jobs <n>", "machines at a time (default: from cores and memory)").argParser(
        positiveInt,
      ),
    )
    .option("--libs <dir|git-url@ref>", "falcosecurity/libs for the falco plan (same as --source libs=…)")
    .option(
      "--source <name=dir|git-url@ref>",
      "where a plan source lives (repeatable; overrides the config's sources:)",
      keyValue("--source", "name=<dir | git-url@ref>"),
    )
    .option(
      "--set <NAME=value>",
      "set a variable the plan declares (repeatable), e.g. USE_BUNDLED_DEPS=ON",
      keyValue("--set", "NAME=value"),
    )
    .addOption(
      new Option(
        "--builders <where>",
        "where builders run: auto = a VM with KVM, else (as root) a container of the same image",
      )
        .choices(["auto", "vm", "container"])
        .default("auto"),
    )
    .addOption(
      new Option(
        "--compile-in <where>",
        "where the plan's compile steps (tests with compileIn) run: auto = the VM with KVM, else (as root) a sandbox of the machine's image",
      ).choices(["auto", "vm", "sandbox"]),
    )
    .option("--rebuild", "run every builder, even when its artifacts are cached from an earlier run")
    .option(
      "--shard <i/n>",
      "run only shard i of n: a deterministic share of the selected machines, balanced by architecture",
      (value: string) => parseShard(value),
    )
    .option("--balance-from <run>", "with --shard: balance the shards by the machines' durations in that run")
    .option(
      "--builders-from <run>",
      "take that run's successful builders (artifacts and records) instead of running them here",
    )
    .option("--baseline <run>", "compare with a previous run in the report")
    .action(async (flags) => {
      const sources = { ...flags.source, ...(flags.libs ? { libs: flags.libs } : {}) };
      const outcome = await runCommand({ ...flags, sources, settings: flags.set }, VERSION);
      console.log(`results: ${outcome.outDir}`);
      await reportCommand(outcome.outDir, { baseline: flags.baseline });
      process.exitCode = outcome.exitCode;
    });

  program
    .command("merge <runs...>")
    .description(
      "reassemble one run from the runs of a sharded fan-out (run --shard), then render its reports",
    )
    .requiredOption("-o, --output <dir>", "the merged run's directory (new or empty)")
    .action(async (runs: string[], flags: { output: string }) => {
      process.exitCode = await mergeCommand(runs, flags);
    });

  program
    .command("report <run-dir>")
    .description("render the matrices, HTML site, JUnit and JSON of a run")
    .option("--baseline <run>", "embed the diff against a previous run")
    .addOption(
      new Option(
        "--style <style>",
        "Markdown matrices: falco = as Falco's kernel-testing renders them; kmatrix = with legend, run line, dmesg and console",
      )
        .choices(MARKDOWN_STYLES)
        .default("falco"),
    )
    .option("--json", "machine-readable output")
    .action(async (dir: string, flags: { baseline?: string; json?: boolean; style?: MarkdownStyle }) => {
      process.exitCode = await reportCommand(dir, flags);
    });

  program
    .command("diff <old-run> <new-run>")
    .description("cells that regressed, got fixed or changed skip reason; exit 1 on any regression")
    .option("--json", "machine-readable output")
    .action(async (oldRun: string, newRun: string, flags: { json?: boolean }) => {
      process.exitCode = await diffCommand(oldRun, newRun, flags);
    });

  program
    .command("doctor")
    .description("check the host: tools, disk, accelerator")
    .action(async () => {
      process.exitCode = (await runDoctor()) ? 0 : 1;
    });

  program
    .command("shell <machine> [command...]")
    .description("boot a machine, run a command (or an interactive shell), tear it down")
    .addOption(configOption())
    .addOption(archOption().default(hostArch() ?? "x86_64", "the host's"))
    .action(async (name: string, command: string[], flags: { config?: string; arch: Arch }) => {
      const { matrix, machines } = await selected({ config: flags.config, arch: flags.arch }, [name]);
      const machine = machines[0];
      if (!machine) throw new Error("unreachable: selectMachines never returns an empty list");
      process.exitCode = await runShell(matrix, machine, command);
    });

  program
    .command("clean")
    .description("stop QEMU processes and remove scratch files left by a killed kmatrix")
    .action(async () => {
      const report = await cleanStaleRuns();
      const temps = await removeStaleTemps();
      for (const { path, reason } of temps.left) console.log(`left ${path}: ${reason}`);
      console.log(
        `removed ${report.removedDirs.length} stale run director${report.removedDirs.length === 1 ? "y" : "ies"} and ${temps.removed.length} unfinished cache entr${temps.removed.length === 1 ? "y" : "ies"}, killed ${report.killedPids.length} QEMU process(es)`,
      );
      if (temps.left.length) process.exitCode = 1;
    });
}
