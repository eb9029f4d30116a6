import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { UsageError } from "../util/errors.js";
import { PACKAGE_ROOT } from "../util/package-root.js";
import { parseSource, type SourceRef } from "../util/sources.js";
import { parseYamlFile } from "../util/yaml-file.js";
import { type BuilderSpec, type PlanFile, PlanFileSchema, type TestSpec } from "./schema.js";

/** Plans shipped with kmatrix, selectable by name (`--plan example`). */
export const BUILTIN_PLANS_DIR = join(PACKAGE_ROOT, "plans");

export type { SourceLocation, SourceRef } from "../util/sources.js";

/** A source location the user gave: the spec and the directory a relative path is relative to. */
export interface GivenLocation {
  spec: string;
  baseDir: string;
  /** Where it was given, for messages: `--libs`, `kmatrix.yaml: sources.libs`. */
  from: string;
}

export interface Plan {
  name: string;
  description?: string;
  origin: string;
  sources: SourceRef[];
  env: Record<string, string>;
  builders: BuilderSpec[];
  tests: TestSpec[];
}

/** `NAME` is a built-in plan; anything with a slash or a .yaml/.yml suffix is a file. */
export async function loadPlan(plan: string, cwd = process.cwd()): Promise<Plan> {
  const isFile = plan.includes("/") || /\.ya?ml$/.test(plan);
  const file = isFile ? resolve(cwd, plan) : resolve(BUILTIN_PLANS_DIR, `${plan}.yaml`);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    throw new UsageError(
      isFile ? `${plan}: plan file not found` : `no built-in plan "${plan}" (give a plan file path instead)`,
    );
  }
  return parsePlan(text, isFile ? plan : `${plan} (built-in)`, dirname(file));
}

/** Pure: YAML text → a validated plan whose references all resolve. */
export function parsePlan(text: string, origin: string, baseDir: string): Plan {
  const file: PlanFile = parseYamlFile(text, origin, PlanFileSchema, 'expected "name:" and "tests:"');
  const fail = (msg: string): never => {
    throw new UsageError(`${origin}: ${msg}`);
  };
  unique(
    file.builders.map((b) => b.name),
    "builders",
    fail,
  );
  unique(
    file.tests.map((t) => t.name),
    "tests",
    fail,
  );
  const builderNames = new Set(file.builders.map((b) => b.name));
  file.builders.forEach((b, i) => {
    for (const need of b.needs)
      if (!builderNames.has(need)) fail(`builders[${i}].needs: no builder named "${need}"`);
  });
  builderOrder(file.builders, fail);
  const earlier = new Set<string>();
  file.tests.forEach((t, i) => {
    for (const need of t.needs)
      if (!earlier.has(need))
        fail(`tests[${i}].needs: "${need}" is not a test that comes before "${t.name}"`);
    for (const use of t.uses) if (!builderNames.has(use)) fail(`tests[${i}].uses: no builder named "${use}"`);
    earlier.add(t.name);
  });
  const sources = Object.entries(file.sources).map(([name, spec]) => ({
    name,
    location:
      typeof spec === "string" ? parseSource(spec, baseDir) : { kind: "given" as const, help: spec.given },
  }));
  for (const [i, t] of file.tests.entries()) {
    const source = t.skipUnless?.exists.split("/")[0];
    if (source && !(source in file.sources))
      fail(`tests[${i}].skipUnless.exists: no source named "${source}"`);
  }
  return {
    name: file.name,
    description: file.description,
    origin,
    sources,
    env: file.env,
    builders: builderOrder(file.builders, fail),
    tests: file.tests,
  };
}

/**
 * The plan with every user-given source bound to a location. A source the plan wants but nobody
 * gave is a UsageError that says how to get it; a location for a source the plan does not have is
 * one too (a typo would otherwise be ignored).
 */
export function bindSources(plan: Plan, given: Map<string, GivenLocation>): Plan {
  for (const [name, g] of given)
    if (!plan.sources.some((s) => s.name === name))
      throw new UsageError(
        `${g.from}: plan ${plan.name} has no source "${name}" (its sources: ${plan.sources.map((s) => s.name).join(", ") || "none"})`,
      );
  const sources = plan.sources.map((s): SourceRef => {
    const g = given.get(s.name);
    if (g) return { name: s.name, location: parseSource(g.spec, g.baseDir) };
    if (s.location.kind === "given") {
      const flag = s.name === "libs" ? "--libs " : `--source ${s.name}=`;
      throw new UsageError(
        `plan ${plan.name} needs its ${s.name} source: give ${flag}<dir | git-url@ref> or sources.${s.name} in the config file. ${s.location.help}`,
      );
    }
    return s;
  });
  return { ...plan, sources };
}

/** The plan with `--set NAME=VALUE` applied; only variables the plan declares can be set. */
export function applySettings(plan: Plan, settings: Record<string, string>): Plan {
  for (const name of Object.keys(settings))
    if (!(name in plan.env))
      throw new UsageError(
        `--set ${name}: plan ${plan.name} has no variable ${name} (its variables: ${Object.keys(plan.env).join(", ") || "none"})`,
      );
  return { ...plan, env: { ...plan.env, ...settings } };
}

function unique(names: string[], field: string, fail: (m: string) => never): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) fail(`${field}: "${n}" is defined twice`);
    seen.add(n);
  }
}

/** Builders in an order where every builder comes after those it needs. */
function builderOrder(builders: BuilderSpec[], fail: (m: string) => never): BuilderSpec[] {
  const byName = new Map(builders.map((b) => [b.name, b]));
  const out: BuilderSpec[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (b: BuilderSpec) => {
    if (state.get(b.name) === "done") return;
    if (state.get(b.name) === "visiting") fail(`builders: "${b.name}" needs itself (a cycle)`);
    state.set(b.name, "visiting");
    for (const n of b.needs) {
      const dep = byName.get(n);
      if (dep) visit(dep);
    }
    state.set(b.name, "done");
    out.push(b);
  };
  for (const b of builders) visit(b);
  return out;
}
