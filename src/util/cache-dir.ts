/**
 * Where kmatrix's cache lives and how its entries are keyed; here, below every folder of the
 * pipeline, because images, plan sources and run scratch dirs all live in it.
 */
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";

/** `$XDG_CACHE_HOME/kmatrix` (or `~/.cache/kmatrix`); `KMATRIX_CACHE` overrides it (tests, CI). */
export function cacheRoot(): string {
  if (process.env.KMATRIX_CACHE) return process.env.KMATRIX_CACHE;
  const xdg = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(xdg, "kmatrix");
}

/** A stable digest of a recipe: the same recipe always gives the same key, any change a new one. */
export function contentKey(recipe: unknown): string {
  return createHash("sha256").update(stableJson(recipe)).digest("hex").slice(0, 16);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
