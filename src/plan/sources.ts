import { existsSync } from "node:fs";
import { join } from "node:path";
import type { LocalSource } from "../util/sources.js";
import type { TestSpec } from "./schema.js";

export { type LocalSource, materializeSources } from "../util/sources.js";

/**
 * Tests whose `skipUnless` path is missing from the sources → the reason they are skipped
 * everywhere. Decided on the host, so a driver the sources do not have never boots a machine.
 */
export function sourceSkips(tests: TestSpec[], sources: Map<string, LocalSource>): Map<string, string> {
  const skips = new Map<string, string>();
  for (const t of tests) {
    if (!t.skipUnless) continue;
    const [name, ...rest] = t.skipUnless.exists.split("/");
    const src = name ? sources.get(name) : undefined;
    if (!src || !existsSync(join(src.dir, ...rest))) {
      const version = src?.revision ? `; ${name} is ${src.revision}` : "";
      skips.set(t.name, `${t.skipUnless.reason}${version}`);
    }
  }
  return skips;
}
