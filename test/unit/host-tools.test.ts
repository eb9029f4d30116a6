/**
 * Ties together the three lists of what the host needs: the programs the source really starts
 * (scanned from src/), src/vm/host-tools.ts (the doctor's list) and the Makefile's DEB_PACKAGES.
 * A new `execa("foo", …)` in src fails here until foo and its package are in both lists.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { checkHostTools, HOST_TOOLS, missingHostToolsMessage } from "../../src/vm/host-tools.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The calls that start a program; their first argument names it. */
const STARTERS = /\b(execa|startOwned|findProgram)\(\s*([^,)]*)/g;

/** Programs that run the program after their `--` (e.g. `unshare … -- sh -c …`) on the host too. */
const WRAPPERS = new Set(["unshare", "setpriv", "chroot", "env", "nsenter", "timeout", "sudo"]);

/** Shell words that start no program on the host. */
const SHELL_BUILTINS = new Set([
  "echo",
  "exit",
  "true",
  "false",
  "test",
  "[",
  "cd",
  "export",
  "set",
  "shift",
  "return",
  "printf",
  "read",
  "trap",
  "wait",
  "kill",
  "local",
  ":",
  "eval",
  "done",
  "fi",
]);

/** Shell keywords before a command (`do cmd`, `then cmd`): dropped, the command is looked at. */
const LEADING_KEYWORDS = /^(?:do|then|else|if|while|until|!|\{|\})\s+/;

interface Scan {
  /** program → where it is started. */
  programs: Map<string, string[]>;
  /** Starts the scan cannot resolve to a program name. */
  unknown: string[];
}

/**
 * Calls whose first argument is not a string literal, by `file first-identifier` (or the
 * identifier alone, anywhere): the programs they may start. A new one fails the scan until it is
 * declared here, so nothing a variable names escapes the check.
 */
function dynamicStarts(qemuBinaries: string[]): Map<string, string[]> {
  return new Map([
    ["qemuBinary", qemuBinaries],
    ["src/images/initrd.ts tool", ["xz", "zstd", "gzip"]],
    // (gzip is undone in-process there.)
    ["src/images/oci/initrd-modules.ts tool", ["xz", "zstd", "lz4"]],
    // The check itself looks up every listed program.
    ["src/vm/host-tools.ts tool", []],
  ]);
}

async function sourceFiles(): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const f of await readdir(join(ROOT, "src"), { recursive: true }))
    if (f.endsWith(".ts")) files.set(`src/${f}`, await readFile(join(ROOT, "src", f), "utf8"));
  return files;
}

/** The text from an opening parenthesis to its match, skipping string and template literals. */
function callText(text: string, open: number): string {
  let depth = 0;
  let quote: string | undefined;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'" || c === "`") quote = c;
    else if (c === "(") depth++;
    else if (c === ")" && --depth === 0) return text.slice(open, i + 1);
  }
  return text.slice(open);
}

/** Programs a shell script runs itself (not those run by what it execs into, e.g. chroot's). */
function scriptPrograms(script: string): { programs: string[]; unknown: string[] } {
  const functions = new Set<string>();
  const programs: string[] = [];
  const unknown: string[] = [];
  for (const line of script.split("\n"))
    for (let segment of line.split(/&&|\|\||;|\|/)) {
      segment = segment.trim().replace(/^[{}!]\s*/, "");
      while (LEADING_KEYWORDS.test(segment)) segment = segment.replace(LEADING_KEYWORDS, "");
      if (/^for\s/.test(segment)) continue; // `for x in words`: no program
      const fn = /^([\w-]+)\(\)\s*\{?\s*(.*)$/.exec(segment);
      if (fn?.[1]) {
        functions.add(fn[1]);
        segment = fn[2] ?? "";
      }
      const words = segment.split(/\s+/).filter((w) => w && !/^\w+=/.test(w));
      let word = words[0];
      if (word === "exec" || word === "command") word = words.slice(1).find((w) => !w.startsWith("-"));
      if (!word || word === "}" || SHELL_BUILTINS.has(word) || functions.has(word)) continue;
      if (/^[\w./+-]+$/.test(word)) programs.push(word.replace(/^.*\//, ""));
      else unknown.push(segment);
      // A wrapper runs its `--` argument on the host too (`setpriv … -- unshare … -- bwrap …`).
      for (let w = word, at = words.indexOf(w); w && WRAPPERS.has(w.replace(/^.*\//, "")); ) {
        const dashes = words.indexOf("--", at);
        w = dashes < 0 ? "" : (words[dashes + 1] ?? "");
        at = dashes + 1;
        if (/^[\w./+-]+$/.test(w)) programs.push(w.replace(/^.*\//, ""));
      }
    }
  return { programs, unknown };
}

async function scanSource(): Promise<Scan> {
  const files = await sourceFiles();
  const programs = new Map<string, string[]>();
  const unknown: string[] = [];
  const add = (program: string, where: string) =>
    programs.set(program, [...(programs.get(program) ?? []), where]);

  // qemuBinary(arch) returns one of the literals its body returns (`return "…"`, `? "…" : "…"`).
  const qemuArgs = files.get("src/vm/qemu-args.ts") ?? "";
  const qemuBody = /function qemuBinary\([^)]*\)[^{]*\{([\s\S]*?)\n\}/.exec(qemuArgs)?.[1] ?? "";
  const qemuBinaries = [...qemuBody.matchAll(/(?:return|\?|:)\s*"([\w.-]+)"/g)].map((m) => m[1] as string);
  const dynamic = dynamicStarts(qemuBinaries);

  for (const [file, text] of files) {
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"execa"/g))
      for (const name of (m[1] ?? "").split(",").map((n) => n.trim()))
        if (name && name !== "execa" && !name.startsWith("type "))
          unknown.push(`${file}: imports ${name} from execa (start programs with execa("prog", …))`);
    if (/\bfrom\s*"(node:)?child_process"/.test(text))
      unknown.push(`${file}: uses child_process (start programs with execa("prog", …))`);
    if (/\bexeca\s*`/.test(text)) unknown.push(`${file}: execa\`…\` (use execa("prog", […]))`);

    for (const m of text.matchAll(STARTERS)) {
      const before = text.slice(Math.max(0, (m.index ?? 0) - 9), m.index);
      if (/function\s*$/.test(before)) continue; // a definition, not a call
      const arg = (m[2] ?? "").trim();
      const where = `${file}: ${m[1]}(${arg}`;
      const literal = /^"([^"]+)"$/.exec(arg)?.[1];
      if (literal) {
        add(literal, where);
        const call = callText(text, (m.index ?? 0) + (m[1] as string).length);
        // A wrapper runs its `--` argument on the host; `sh -c SCRIPT` runs the script's programs.
        // A chain of wrappers (`nsenter … -- setpriv … -- slirp4netns`) is followed to its end.
        const dashes = [...call.matchAll(/"--",\s*"([^"]+)"/g)].map((d) => d[1] as string);
        for (let w = literal, i = 0; WRAPPERS.has(w) && i < dashes.length; i++) {
          w = dashes[i] as string;
          add(w, `${where} … -- ${w}`);
        }
        for (const sh of call.matchAll(/"(?:sh|bash|dash)",\s*"-c",\s*([A-Za-z_$][\w$]*)/g)) {
          const name = sh[1] as string;
          const script = new RegExp(`const ${name.replace("$", "\\$")}\\s*=\\s*\`([\\s\\S]*?)\`;`).exec(
            text,
          )?.[1];
          if (script === undefined) {
            unknown.push(`${where}: sh -c ${name}, whose script is not a template literal of ${file}`);
            continue;
          }
          const s = scriptPrograms(script);
          for (const p of s.programs) add(p, `${where} … sh -c ${name}`);
          for (const u of s.unknown) unknown.push(`${file} ${name}: cannot tell the program of \`${u}\``);
        }
        continue;
      }
      const ident = /^[A-Za-z_$][\w$]*/.exec(arg)?.[0] ?? arg;
      const declared = dynamic.get(ident) ?? dynamic.get(`${file} ${ident}`);
      if (declared) for (const p of declared) add(p, where);
      else unknown.push(`${where}: declare the programs it may start in this test's dynamicStarts`);
    }
  }
  return { programs, unknown };
}

/** DEB_PACKAGES of the Makefile, continuation lines joined. */
async function makefilePackages(): Promise<Set<string>> {
  const text = (await readFile(join(ROOT, "Makefile"), "utf8")).replace(/\\\n/g, " ");
  const value = /^DEB_PACKAGES\s*:?=(.*)$/m.exec(text)?.[1];
  if (!value) throw new Error("no DEB_PACKAGES in the Makefile");
  return new Set(value.trim().split(/\s+/));
}

async function installed(pkg: string): Promise<boolean> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const r = await execa("dpkg-query", ["-W", "-f", "${Status}", pkg], { reject: false });
  return r.exitCode === 0 && /^\S+ ok installed$/.test(String(r.stdout).trim());
}

describe("host tools", () => {
  let scan: Scan;
  beforeAll(async () => {
    scan = await scanSource();
  });
  const listed = new Set(HOST_TOOLS.flatMap((t) => (t.program ? [t.program] : [])));

  it("the scan resolves every program start in src", () => {
    expect(scan.unknown).toEqual([]);
  });

  it("lists every program the source starts on the host, with its package", () => {
    const unlisted = [...scan.programs]
      .filter(([p]) => !listed.has(p))
      .map(([p, where]) => `${p} (${where[0]})`);
    expect(unlisted, "add them to HOST_TOOLS in src/vm/host-tools.ts").toEqual([]);
  });

  it("lists no program the source no longer starts", () => {
    const stale = [...listed].filter((p) => !scan.programs.has(p));
    expect(stale).toEqual([]);
  });

  it("finds the programs of container.ts's set-up script and of the wrappers", () => {
    // The scanner itself: what it must see through unshare's `--`, the script run by `bash -c`
    // (and the wrappers it execs), and nsenter's chain of wrappers.
    for (const p of [
      "setpriv",
      "unshare",
      "bash",
      "mount",
      "mknod",
      "bwrap",
      "nsenter",
      "slirp4netns",
      "qemu-system-aarch64",
      "qemu-system-x86_64",
    ])
      expect(scan.programs.has(p), p).toBe(true);
  });

  it("has every package in the Makefile's DEB_PACKAGES", async () => {
    const deb = await makefilePackages();
    const absent = [...new Set(HOST_TOOLS.map((t) => t.pkg))].filter((p) => !deb.has(p));
    expect(absent, "add them to DEB_PACKAGES in the Makefile").toEqual([]);
  });

  it("names the package that really ships each program (where dpkg knows it)", async () => {
    const wrong: string[] = [];
    for (const t of HOST_TOOLS) {
      if (!t.program || !(await installed(t.pkg))) continue;
      const { stdout } = await execa("dpkg", ["-L", t.pkg]);
      const ships = stdout.split("\n").some((f) => new RegExp(`^(/usr)?/s?bin/${t.program}$`).test(f));
      if (!ships) wrong.push(`${t.program} is not in ${t.pkg}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe("scriptPrograms", () => {
  it("skips builtins and functions, follows exec, splits on && || ; |", () => {
    const s = scriptPrograms(
      'fail() { echo "x $*" >&2; exit 125; }\nmount -o ro a b || fail "m"\nA=1 ip link 2>/dev/null || true\nexec chroot "$5" /bin/sh -c "$6" | tee log && /usr/bin/du -s .',
    );
    expect(s).toEqual({ programs: ["mount", "ip", "chroot", "tee", "du"], unknown: [] });
  });

  it("follows wrappers' `--` and shell keywords, skips `for` lists", () => {
    const s = scriptPrograms(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax
      'for fd in /proc/self/fd/*; do fd="${fd##*/}"; [ "$fd" -gt 5 ] && eval "exec $fd>&-"; done\n' +
        '[ "$n" = x ] || exec setpriv --reuid="$u" -- unshare --user -- bwrap --bind /run / "$@"\n' +
        "if true; then mknod -m 0666 t c 10 200; fi",
    );
    expect(s).toEqual({ programs: ["setpriv", "unshare", "bwrap", "mknod"], unknown: [] });
  });
});

describe("checkHostTools", () => {
  const savedPath = process.env.PATH;
  let empty: string;
  afterEach(async () => {
    process.env.PATH = savedPath;
    if (empty) await rm(empty, { recursive: true, force: true });
  });

  it("names what is missing and the package to install", async () => {
    empty = await mkdtemp(join(tmpdir(), "kmatrix-path-"));
    process.env.PATH = empty; // nothing on PATH, dpkg-query included: every package reads as absent
    const missing = await checkHostTools();
    const byLabel = new Map(missing.map((m) => [m.label, m.fix]));
    expect(byLabel.get("mmdebstrap's foreign-architecture check (arch-test)")).toBe(
      "apt-get install arch-test",
    );
    // Only kmatrix's own needs by default; the browser tests' packages with "all".
    expect(missing.some((m) => m.tool.pkg === "chromium")).toBe(false);
    expect((await checkHostTools("all")).some((m) => m.tool.pkg === "chromium")).toBe(true);
    const message = missingHostToolsMessage(missing);
    expect(message).toContain("make deps");
    expect(message).toMatch(/apt-get install .*\barch-test\b/);
  });
});
