import { parseDocument } from "yaml";
import type { z } from "zod";
import { UsageError } from "./errors.js";

/**
 * YAML text → a value validated by `schema`. Every problem is a one-line UsageError that starts
 * with `origin` (the file) and names the field: `kmatrix.yaml: machines[2].arch: expected ...`.
 */
export function parseYamlFile<S extends z.ZodType>(
  text: string,
  origin: string,
  schema: S,
  emptyHint: string,
): z.output<S> {
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
  if (raw === null || raw === undefined) throw new UsageError(`${origin}: file is empty (${emptyHint})`);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new UsageError(`${origin}: ${formatIssue(parsed.error.issues[0], raw)}`);
  return parsed.data;
}

type Issue = z.core.$ZodIssue;

/** One line: `field.path: what is wrong, got <value>`. The offending value is looked up in the raw input. */
function formatIssue(issue: Issue | undefined, raw: unknown): string {
  if (!issue) return "invalid file";
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
