/** Text helpers shared by the renderers: clean captured output, escape it, slug headings. */

// Build tools colour their output; reports show it as plain text (and XML 1.0 forbids ESC).
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching terminal escapes is the point
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
// Everything XML 1.0 does not allow (other control characters, lone surrogates, U+FFFE/FFFF).
const NOT_XML = /[^\t\n\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu;

/** Captured output made safe for any report: no terminal escapes, no CRs, only XML 1.0 characters. */
export function cleanText(s: string | undefined): string {
  if (!s) return "";
  return s.replace(ANSI, "").replace(/\r\n?/g, "\n").replace(NOT_XML, "");
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};
/** Escapes for XML and HTML text and attribute values (after cleanText). */
export const escapeXml = (s: string) => cleanText(s).replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);

/**
 * GitHub's heading anchors (github-slugger): lowercase, punctuation other than - and _ removed
 * (so dots go), spaces become -, and a repeated slug gets -1, -2, ... in document order.
 */
export function slugger(): (heading: string) => string {
  const seen = new Map<string, number>();
  return (heading) => {
    const base = heading
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
      .replace(/ /g, "-");
    let slug = base;
    while (seen.has(slug)) {
      const n = (seen.get(base) ?? 0) + 1;
      seen.set(base, n);
      slug = `${base}-${n}`;
    }
    seen.set(slug, 0);
    return slug;
  };
}

/** A Markdown code block whose fence is longer than any backtick run inside (output may hold ```). */
export function codeBlock(s: string): string {
  const body = cleanText(s).replace(/\n+$/, "");
  const longest = Math.max(2, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = "`".repeat(longest + 1);
  return `${fence}\n${body}\n${fence}\n`;
}

/** Milliseconds as "1 h 02 min", "3 min 05 s" or "4.2 s". */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return "unknown";
  const s = Math.round(ms / 1000);
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, "0")} min`;
}
