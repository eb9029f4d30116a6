/**
 * The table of Falco's matrix_gen, drawn as olekukonko/tablewriter 0.0.5 draws it with matrix_gen's
 * settings (header set, left and right borders, no top or bottom border, "|" at the crossings;
 * everything else tablewriter's defaults). Re-stated from tablewriter's and go-runewidth's rules:
 *
 * - Header: each line of a header goes through tablewriter's Title() when printed: `_` becomes a
 *   space, a `.` becomes a space unless both its neighbours are digits or spaces (or the string's
 *   ends), surrounding spaces are trimmed, and the result is upper-cased. The column's width is
 *   taken from the header as given (before Title) and from the cells. Headers are centred (the
 *   extra space goes right when the gap is odd).
 * - Cells: left-aligned, except a cell that reads as a decimal number (`-1,234.5`, `5.10`), which is
 *   right-aligned. One space of margin each side, `|` between columns.
 * - Widths are display widths as go-runewidth 0.0.9 counts them in a non-CJK locale (see
 *   runeWidth), after removing ANSI colour codes.
 * - Wrapping: a cell or header wider than 30 columns that contains spaces is broken into lines of at
 *   most 30 columns (or its longest word) with minimal raggedness; a row is as tall as its tallest
 *   cell and shorter cells are filled with lines of two spaces. Machine and test names have no
 *   spaces, so a matrix never wraps; the rule is here so that odd record names still come out as
 *   the original would print them.
 * - Separator: `|` then, per column, dashes over the width plus both margins, then `|`.
 */

const MAX_WIDTH = 30;

// What go-runewidth 0.0.9 counts as zero width or double width, as far as matrices need it.
// Exact for ASCII and for every symbol the matrices print (🟢 🟡 ❌ ❔ are 2 columns, ⚠ is 1 and
// so is the emoji variation selector U+FE0F); other scripts are approximated from Unicode's East
// Asian Width (wide and fullwidth ranges) and emoji presentation.
type Range = readonly [number, number];
const ZERO_WIDTH: Range[] = [
  [0x0000, 0x001f], // control characters
  [0x007f, 0x009f],
  [0x00ad, 0x00ad], // soft hyphen
  [0x0300, 0x036f], // combining marks
  [0x0483, 0x0489],
  [0x070f, 0x070f],
  [0x180b, 0x180e],
  [0x200b, 0x200f], // zero-width space, joiners, direction marks
  [0x2028, 0x202e],
  [0x206a, 0x206f],
  [0x20d0, 0x20f0],
  [0xd800, 0xdfff], // lone surrogates
  [0xfe20, 0xfe2f],
  [0xfeff, 0xfeff],
  [0xfff9, 0xfffb],
  [0xfffe, 0xffff],
];
const WIDE: Range[] = [
  [0x1100, 0x115f], // Hangul Jamo
  [0x2e80, 0x303e], // CJK radicals, punctuation
  [0x3041, 0x33ff],
  [0x3400, 0x4dbf],
  [0x4e00, 0xa4cf],
  [0xa960, 0xa97f],
  [0xac00, 0xd7a3], // Hangul syllables
  [0xf900, 0xfaff],
  [0xfe10, 0xfe19],
  [0xfe30, 0xfe6f],
  [0xff01, 0xff60], // fullwidth forms
  [0xffe0, 0xffe6],
  [0x1f300, 0x1f64f], // pictographs, emoticons
  [0x1f680, 0x1f6ff],
  [0x1f7e0, 0x1f7eb], // coloured circles and squares (🟢 🟡)
  [0x1f900, 0x1f9ff],
  [0x20000, 0x2fffd],
  [0x30000, 0x3fffd],
];
const inRanges = (cp: number, ranges: Range[]) => ranges.some(([a, b]) => cp >= a && cp <= b);
const EMOJI_PRESENTATION = /^\p{Emoji_Presentation}$/u;

/** Columns one code point takes, as go-runewidth 0.0.9's RuneWidth outside CJK locales. */
export function runeWidth(ch: string): number {
  const cp = ch.codePointAt(0) ?? 0;
  if (inRanges(cp, ZERO_WIDTH)) return 0;
  if (inRanges(cp, WIDE)) return 2;
  // Regional indicators are neutral in 0.0.9's tables; other emoji-presentation symbols (❌ ❔) wide.
  if (cp >= 0x1f1e6 && cp <= 0x1f1ff) return 1;
  return EMOJI_PRESENTATION.test(ch) ? 2 : 1;
}

/** runewidth.StringWidth: the sum over code points. */
export function stringWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += runeWidth(ch);
  return w;
}

// tablewriter's DisplayWidth ignores colour codes (ESC [ … m or K).
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching terminal escapes is the point
const ANSI_CODE = /\x1b\[(?:[0-9]{1,3}(?:;[0-9]{1,3})*)?[m|K]/g;
export const displayWidth = (s: string): number => stringWidth(s.replace(ANSI_CODE, ""));

const isDigitOrSpace = (ch: string | undefined) => ch !== undefined && /^[0-9 ]$/.test(ch);

/** tablewriter's Title(): how a header is printed. */
export function title(name: string): string {
  const rs = [...name];
  // In place, as the original: a dot sees the replacements made before it.
  rs.forEach((r, i) => {
    if (r === "_") rs[i] = " ";
    else if (r === ".") {
      const before = i !== 0 && !isDigitOrSpace(rs[i - 1]);
      const after = i !== rs.length - 1 && !isDigitOrSpace(rs[i + 1]);
      if (before || after) rs[i] = " ";
    }
  });
  let s = rs.join("").replace(/^\s+|\s+$/g, "");
  if (s.length === 0 && name.length > 0) s = " ";
  // Go's strings.ToUpper maps code point by code point (no "ß" → "SS").
  return [...s].map((c) => (c.toUpperCase().length === c.length ? c.toUpperCase() : c)).join("");
}

/** Minimal-raggedness line breaking over words (spaces count 1, over-long lines cost 1e5 more). */
function wrapWords(words: string[], lim: number): string[][] {
  const n = words.length;
  const widths = words.map(stringWidth);
  // len(i, j): the words i..j on one line.
  const len = (i: number, j: number) => {
    let total = j - i;
    for (let k = i; k <= j; k++) total += widths[k] ?? 0;
    return total;
  };
  const cost = new Array<number>(n).fill(2 ** 31 - 1);
  const next = new Array<number>(n).fill(n);
  for (let i = n - 1; i >= 0; i--) {
    if (len(i, n - 1) <= lim) {
      cost[i] = 0;
      next[i] = n;
      continue;
    }
    for (let j = i + 1; j < n; j++) {
      const l = len(i, j - 1);
      const d = lim - l;
      let c = d * d + (cost[j] ?? 0);
      if (l > lim) c += 1e5;
      if (c < (cost[i] ?? 0)) {
        cost[i] = c;
        next[i] = j;
      }
    }
  }
  const lines: string[][] = [];
  for (let i = 0; i < n; i = next[i] ?? n) lines.push(words.slice(i, next[i]));
  return lines;
}

function wrapString(s: string, lim: number): string[] {
  const words = s.replace(/\n/g, " ").split(" ");
  const limit = Math.max(lim, ...words.map(stringWidth));
  return wrapWords(words, limit).map((line) => line.join(" "));
}

/** One cell (or header) as lines, and the width it needs. */
function lay(text: string): { lines: string[]; width: number } {
  const raw = text.split("\n");
  const width = Math.min(MAX_WIDTH, Math.max(0, ...raw.map(displayWidth)));
  const lines = wrapString(raw.join(" "), width);
  return { lines, width: Math.max(width, ...lines.map(displayWidth)) };
}

const DECIMAL = /^-?(?:\d{1,3}(?:,\d{3})*|\d+)(?:\.\d+)?$/;
const spaces = (n: number) => " ".repeat(Math.max(0, n));
const padRight = (s: string, w: number) => s + spaces(w - displayWidth(s));
const padLeft = (s: string, w: number) => spaces(w - displayWidth(s)) + s;
function centre(s: string, w: number): string {
  const gap = w - displayWidth(s);
  if (gap <= 0) return s;
  const left = Math.floor(gap / 2);
  return spaces(left) + s + spaces(gap - left);
}

/** The table, every line ending in "\n" (header lines, separator, then the rows). */
export function renderTable(header: string[], rows: string[][]): string {
  const widths: number[] = [];
  const widen = (i: number, w: number) => {
    widths[i] = Math.max(widths[i] ?? 0, w);
  };
  const head = header.map((h, i) => {
    const l = lay(h);
    widen(i, l.width);
    return l.lines;
  });
  const body = rows.map((row) =>
    row.map((v, i) => {
      const l = lay(v);
      widen(i, l.width);
      return l.lines;
    }),
  );
  let out = "";
  const headHeight = Math.max(1, ...head.map((l) => l.length));
  for (let x = 0; x < headHeight; x++) {
    out += "|";
    widths.forEach((w, y) => {
      out += ` ${centre(title(head[y]?.[x] ?? ""), w)} |`;
    });
    out += "\n";
  }
  out += `|${widths.map((w) => `${"-".repeat(w + 2)}|`).join("")}\n`;
  for (const row of body) {
    const height = Math.max(...row.map((l) => l.length));
    for (let x = 0; x < height; x++) {
      row.forEach((lines, y) => {
        const s = lines[x] ?? "  ";
        const w = widths[y] ?? 0;
        out += `| ${DECIMAL.test(s.trim()) ? padLeft(s, w) : padRight(s, w)} `;
      });
      out += "|\n";
    }
  }
  return out;
}
