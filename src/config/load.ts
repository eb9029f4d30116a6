/** Reads the matrix file, validates it and expands it into one Machine per (entry, arch). */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { UsageError } from "../util/errors.js";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "./default.js";
import { MatrixFileSchema } from "./schema.js";
import type { Arch, ArchiveSettings, Machine, Matrix, VmSettings } from "./types.js";

export const DEFAULT_VM: VmSettings = { cpus: 2, memoryMiB: 2048, accel: "auto", bootTimeoutSec: 300 };
export const DEFAULT_ARCHIVE: ArchiveSettings = {
  mirror: "http://deb.debian.org/debian",
  securityMirror: "http://deb.debian.org/debian-security",
};

/**
 * `configPath` (relative to cwd) if given, else `kmatrix.yaml` in cwd if it exists, else the embedded
 * default. Every problem is a one-line UsageError.
 */
export async function loadMatrix(opts: { configPath?: string; cwd?: string } = {}): Promise<Matrix> {
  const cwd = opts.cwd ?? process.cwd();
  if (opts.configPath !== undefined) {
    const text = await readIfExists(path.resolve(cwd, opts.configPath), opts.configPath);
    if (text === undefined) throw new UsageError(`${opts.configPath}: config file not found`);
    return parseMatrix(text, opts.configPath);
  }
  const local = path.resolve(cwd, "kmatrix.yaml");
  const origin = displayPath(local);
  const text = await readIfExists(local, origin);
  return text === undefined
    ? parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN)
    : parseMatrix(text, origin);
}

async function readIfExists(file: string, shown: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new UsageError(`${shown}: cannot read config file: ${(err as Error).message}`);
  }
}

/** Relative to the process cwd when below it (short messages), else absolute. */
function displayPath(abs: string): string {
  const rel = path.relative(process.cwd(), abs);
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : abs;
}

/** Pure: YAML text → validated, expanded matrix. `origin` prefixes every error message. */
export function parseMatrix(text: string, origin: string): Matrix {
  const doc = parseDocument(text);
  const yamlErr = doc.errors[0];
  if (yamlErr) {
    // The library's message carries a multi-line source excerpt; keep only the first sentence.
    const msg = (yamlErr.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+:?$/, "");
    const pos = yamlErr.linePos?.[0];
    throw new UsageError(`${origin}:${pos ? `${pos.line}:${pos.col}:` : ""} invalid YAML: ${msg}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (err) {
    // e.g. an alias to an undefined anchor
    throw new UsageError(`${origin}: invalid YAML: ${(err as Error).message.split("\n")[0]}`);
  }
  if (raw === null || raw === undefined)
    throw new UsageError(`${origin}: file is empty (expected a "machines:" list)`);
  const parsed = MatrixFileSchema.safeParse(raw);
  if (!parsed.success) throw new UsageError(`${origin}: ${formatIssue(parsed.error.issues[0], raw)}`);
  const file = parsed.data;

  const archive: ArchiveSettings = {
    // Without a trailing slash so that consumers can append `/dists/...`.
    mirror: (file.archive?.mirror ?? DEFAULT_ARCHIVE.mirror).replace(/\/+$/, ""),
    securityMirror: (file.archive?.securityMirror ?? DEFAULT_ARCHIVE.securityMirror).replace(/\/+$/, ""),
  };
  const machines: Machine[] = [];
  const definedBy = new Map<string, number>(); // machine id → index of its entry
  file.machines.forEach((entry, i) => {
    for (const arch of entry.arch) {
      const id = `${entry.name}@${arch}`;
      const prev = definedBy.get(id);
      if (prev === i) throw new UsageError(`${origin}: machines[${i}].arch: "${arch}" is listed twice`);
      if (prev !== undefined) {
        throw new UsageError(
          `${origin}: machines[${i}]: machine "${id}" is already defined by machines[${prev}]`,
        );
      }
      definedBy.set(id, i);
      machines.push({
        name: entry.name,
        arch,
        id,
        kernel: { ...entry.kernel },
        rootfs: entry.rootfs ? { ...entry.rootfs } : { source: "debian", suite: entry.kernel.suite },
        packages: [...entry.packages],
        vm: { ...DEFAULT_VM, ...file.vm, ...entry.vm },
      });
    }
  });
  return { origin, archive, machines };
}

type Issue = z.core.$ZodIssue;

/** One line: `field.path: what is wrong, got <value>`. The offending value is looked up in the raw input. */
function formatIssue(issue: Issue | undefined, raw: unknown): string {
  if (!issue) return "invalid configuration";
  const p = [...issue.path] as PropertyKey[];
  // `arch: arm64` is validated as `[arm64]`; report it at `arch`, not `arch[0]`.
  while (typeof p.at(-1) === "number" && !Array.isArray(valueAt(raw, p.slice(0, -1)))) p.pop();
  const value = valueAt(raw, p);
  const where = p.length ? `${formatPath(p)}: ` : "";
  const got = `, got ${show(value)}`;
  switch (issue.code) {
    case "unrecognized_keys":
      return `${where}unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}`;
    case "invalid_type":
      if (value === undefined) return `${where}missing (required)`;
      return `${where}expected ${TYPE_NAMES[issue.expected] ?? issue.expected}${got}`;
    case "invalid_value":
      return `${where}expected ${oneOf(issue.values)}${got}`;
    case "invalid_union":
      // Only discriminated unions (kernel/rootfs `source`) are used in the schema.
      if ("options" in issue && issue.options) {
        if (value === undefined) return `${where}missing (required; ${oneOf(issue.options)})`;
        return `${where}expected ${oneOf(issue.options)}${got}`;
      }
      return `${where}${issue.message}${got}`;
    case "too_small":
      if (issue.origin === "array") return `${where}must not be empty`;
      return `${where}expected at least ${issue.minimum}${got}`;
    case "too_big":
      return `${where}expected at most ${issue.maximum}${got}`;
    default:
      return `${where}${issue.message}${got}`;
  }
}

const TYPE_NAMES: Record<string, string> = {
  int: "an integer",
  number: "a number",
  string: "a string",
  boolean: "true or false",
  object: "a mapping",
  array: "a list",
};

function valueAt(raw: unknown, p: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const key of p) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function formatPath(p: readonly PropertyKey[]): string {
  return p.map((k, i) => (typeof k === "number" ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join("");
}

function oneOf(values: readonly unknown[]): string {
  const shown = values.map((v) => JSON.stringify(v));
  return shown.length > 1 ? `${shown.slice(0, -1).join(", ")} or ${shown.at(-1)}` : (shown[0] ?? "nothing");
}

function show(v: unknown): string {
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (v !== null && typeof v === "object") return "a mapping";
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * Filters by arch, then keeps machines whose name matches any glob (`*`, `?`); a pattern containing
 * `@` is matched against the id (`name@arch`) instead. A pattern that matches nothing is a
 * UsageError so that a typo does not silently test nothing.
 */
export function selectMachines(matrix: Matrix, opts: { arch?: Arch; patterns?: string[] } = {}): Machine[] {
  const pool = opts.arch ? matrix.machines.filter((m) => m.arch === opts.arch) : matrix.machines;
  const onArch = opts.arch ? ` for ${opts.arch}` : "";
  if (pool.length === 0) throw new UsageError(`${matrix.origin}: no machines${onArch}`);
  const patterns = opts.patterns ?? [];
  if (patterns.length === 0) return pool;
  const matchers = patterns.map((pat) => ({ pat, re: globToRegExp(pat), id: pat.includes("@"), hit: false }));
  const selected = pool.filter((m) => {
    let keep = false;
    for (const g of matchers) {
      if (g.re.test(g.id ? m.id : m.name)) keep = g.hit = true;
    }
    return keep;
  });
  const miss = matchers.find((g) => !g.hit);
  if (miss) {
    const names = [...new Set(pool.map((m) => m.name))].join(", ");
    throw new UsageError(
      `no machine${onArch} matches "${miss.pat}" (machines in ${matrix.origin}: ${names})`,
    );
  }
  return selected;
}

/** `*` = any run of characters, `?` = one character, everything else literal (so `.` is a dot). */
export function globToRegExp(glob: string): RegExp {
  const body = [...glob]
    .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}]/g, "\\$&")))
    .join("");
  return new RegExp(`^${body}$`);
}

/** Plain aligned table for `kmatrix machines` (no trailing newline). */
export function describeMachines(machines: readonly Machine[]): string {
  const rows = [
    ["NAME", "ARCH", "KERNEL", "ROOTFS", "CPUS", "MEMORY", "ACCEL"],
    ...machines.map((m) => [
      m.name,
      m.arch,
      `${m.kernel.source} ${m.kernel.suite} ${m.kernel.flavour}`,
      `${m.rootfs.source} ${m.rootfs.suite}`,
      String(m.vm.cpus),
      `${m.vm.memoryMiB} MiB`,
      m.vm.accel,
    ]),
  ];
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, col) => cell.padEnd(widths[col] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
