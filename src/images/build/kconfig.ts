/**
 * Kernel configs as data (pure): parsing `.config` text and fragments, merging them in the order
 * kmatrix applies them (base, the user's fragments, then the items a kmatrix machine needs), and
 * checking what `make olddefconfig` kept. No file or process here: unit-tested as it is.
 */

/** A symbol's value as a `.config` writes it: `y`, `m`, `n` (for `# CONFIG_X is not set`), or a literal. */
export type KconfigValue = string;

/** Symbol (with its `CONFIG_` prefix) → value, in the order the text gave them. */
export type Kconfig = Map<string, KconfigValue>;

const ASSIGNMENT = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/;
const UNSET = /^# (CONFIG_[A-Za-z0-9_]+) is not set\s*$/;

/**
 * Parses `.config` text or a fragment; a later line for the same symbol wins (as kconfig reads
 * them). Any other non-comment line is an error naming the line (`where:line`).
 */
export function parseKconfig(text: string, where: string): Kconfig {
  const config: Kconfig = new Map();
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    const set = ASSIGNMENT.exec(line);
    const unset = UNSET.exec(line);
    if (set?.[1] && set[2] !== undefined) config.set(set[1], set[2]);
    else if (unset?.[1]) config.set(unset[1], "n");
    else if (line !== "" && !line.startsWith("#"))
      throw new Error(`${where}:${i + 1}: not a kernel config line: ${line.slice(0, 80)}`);
  });
  return config;
}

/** Writes a config back as `.config` lines (`n` as `# CONFIG_X is not set`). */
export function formatKconfig(config: Kconfig): string {
  return [...config]
    .map(([symbol, value]) => (value === "n" ? `# ${symbol} is not set` : `${symbol}=${value}`))
    .join("\n")
    .concat(config.size ? "\n" : "");
}

/** A fragment named for messages (`machines[2].kernel.fragments[0]: bpf-off.config`). */
export interface NamedFragment {
  name: string;
  config: Kconfig;
}

/** A fragment that set a required item to another value; the required value was kept. */
export interface Conflict {
  symbol: string;
  fragment: string;
  fragmentValue: KconfigValue;
  required: KconfigValue;
}

export interface MergedConfig {
  config: Kconfig;
  conflicts: Conflict[];
}

/**
 * The input of `make olddefconfig`: the base, each fragment over it in order, then the required
 * items over everything: a machine kmatrix cannot boot or test is no use whatever the fragments say,
 * so the required items win and every fragment that disagreed is reported.
 */
export function mergeKconfig(base: Kconfig, fragments: NamedFragment[], required: Kconfig): MergedConfig {
  const config: Kconfig = new Map(base);
  const conflicts: Conflict[] = [];
  for (const f of fragments)
    for (const [symbol, value] of f.config) {
      config.set(symbol, value);
      const want = required.get(symbol);
      if (want !== undefined && !sameValue(want, value))
        conflicts.push({ symbol, fragment: f.name, fragmentValue: value, required: want });
    }
  for (const [symbol, value] of required) config.set(symbol, value);
  return { config, conflicts };
}

/** A required item the final config does not have as required, and what it has instead. */
export interface Dropped {
  symbol: string;
  required: KconfigValue;
  /** `n` when the final config does not mention it. */
  actual: KconfigValue;
}

/**
 * The required items olddefconfig did not keep (an unmet dependency, a tool kconfig probes for
 * such as pahole for BTF). `m` for a required `y` is dropped too: a machine boots before modules.
 */
export function droppedRequired(final: Kconfig, required: Kconfig): Dropped[] {
  const dropped: Dropped[] = [];
  for (const [symbol, want] of required) {
    const actual = final.get(symbol) ?? "n";
    if (!sameValue(want, actual)) dropped.push({ symbol, required: want, actual });
  }
  return dropped;
}

function sameValue(a: KconfigValue, b: KconfigValue): boolean {
  return unquote(a) === unquote(b);
}

function unquote(v: KconfigValue): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/** One line per conflict, for the log: which fragment lost which item. */
export function describeConflict(c: Conflict): string {
  return `${c.fragment} sets ${c.symbol}=${c.fragmentValue}, which kmatrix needs as ${c.required}: kept ${c.required}`;
}

/** One line for what olddefconfig dropped. */
export function describeDropped(d: Dropped[]): string {
  return d.map((x) => `${x.symbol}=${x.required} (got ${x.actual})`).join(", ");
}
