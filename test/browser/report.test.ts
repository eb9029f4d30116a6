/**
 * The HTML report in a real browser (Debian's chromium through playwright-core): render the fixture
 * run, open the x86_64 page from file://, open a red cell and a green one flagged with a kernel
 * warning, filter to problems, check phone and dark mode. Saves screenshots under test-artifacts/. Fails (never skips) when chromium is missing.
 */
import { access, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderReport } from "../../src/report/index.js";
import { writeFixtureRun } from "../unit/fixtures/report/run.js";

const CHROMIUM = process.env.KMATRIX_CHROMIUM ?? "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));

let tmp: string;
let ctx: BrowserContext;
let page: Page;
const pageErrors: string[] = [];
const requests: string[] = [];
let xUrl: string;

beforeAll(async () => {
  await access(CHROMIUM).catch(() => {
    throw new Error(`${CHROMIUM} not found: the browser test needs it (apt-get install -y chromium)`);
  });
  tmp = await mkdtemp(path.join(tmpdir(), "kmatrix-report-browser-"));
  const runDir = path.join(tmp, "run");
  await writeFixtureRun(runDir);
  await renderReport(runDir);
  xUrl = pathToFileURL(path.join(runDir, "report", "html", "x86_64.html")).href;
  await mkdir(ARTIFACTS, { recursive: true });
  // A fresh profile every time: no state from an earlier run can make the test pass.
  ctx = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  page = ctx.pages()[0] ?? (await ctx.newPage());
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("request", (r) => requests.push(r.url()));
}, 60_000);

afterAll(async () => {
  await ctx?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const cell = (machine: string, test: string) =>
  page.locator(`td[data-machine="${machine}"][data-test="${test}"]`);
const dialogOf = (machineId: string, test: string) =>
  page.locator(`dialog[data-machine-id="${machineId}"][data-test="${test}"]`);

describe("HTML report in chromium", () => {
  it("opens a failed cell's output and filters to problems", async () => {
    await page.goto(xUrl);
    expect(await page.title()).toContain("x86_64");

    const red = cell("debian-bookworm-6.1", "kmod_build");
    expect(await red.getAttribute("data-verdict")).toBe("fail");
    const dialog = dialogOf("debian-bookworm-6.1@x86_64", "kmod_build");
    expect(await dialog.isVisible()).toBe(false);
    await red.locator("a").click();
    await dialog.waitFor({ state: "visible", timeout: 5000 });
    const output = dialog.locator("pre.output");
    await output.waitFor({ state: "visible" });
    expect(await output.textContent()).toContain("'struct task_struct' has no member named 'state'");
    expect(await dialog.locator("pre.reason").textContent()).toBe("make driver exited with code 2");
    expect(page.url()).toMatch(/#debian-bookworm-61-kmod_build$/);
    await page.screenshot({ path: path.join(ARTIFACTS, "report-x86_64-dialog.png") });
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden", timeout: 5000 });

    const green = page.locator('tr[data-machine="debian-trixie-6.12"]');
    const problem = page.locator('tr[data-machine="debian-bookworm-6.1"]');
    expect(await green.isVisible()).toBe(true);
    await page.check("#only-problems");
    await green.waitFor({ state: "hidden", timeout: 5000 });
    expect(await problem.isVisible()).toBe(true);
    await page.uncheck("#only-problems");
    await green.waitFor({ state: "visible", timeout: 5000 });

    await page.screenshot({ path: path.join(ARTIFACTS, "report-x86_64.png"), fullPage: true });
  });

  it("tells a harness error from a driver failure", async () => {
    await page.goto(xUrl);
    const err = cell("debian-sid-7.2", "kmod_build");
    expect(await err.getAttribute("data-verdict")).toBe("error");
    expect(await err.textContent()).toContain("⚠️");
    await err.locator("a").click();
    const dialog = dialogOf("debian-sid-7.2@x86_64", "kmod_build");
    await dialog.waitFor({ state: "visible", timeout: 5000 });
    expect(await dialog.textContent()).toContain("not a driver failure");
  });

  it("opens a cell from a deep link, with its dmesg and console", async () => {
    await page.goto(`${xUrl}#debian-bookworm-61-bpf-probe_scap-open`);
    const dialog = dialogOf("debian-bookworm-6.1@x86_64", "bpf-probe_scap-open");
    await dialog.waitFor({ state: "visible", timeout: 5000 });
    expect(await dialog.locator("pre.dmesg").textContent()).toContain("BUG: unable to handle page fault");
    expect(await dialog.locator("pre.console").textContent()).toContain("Kernel panic");
  });

  it("flags a pass with a kernel warning and shows the warning in its dialog", async () => {
    await page.goto(xUrl);
    const warned = cell("debian-bookworm-6.1", "modern-bpf_scap-open");
    expect(await warned.getAttribute("data-verdict")).toBe("pass");
    expect(await warned.getAttribute("data-kernel-warnings")).toBe("1");
    expect(await warned.textContent()).toBe("🟢⚑");
    const link = warned.getByRole("link", { name: "modern-bpf_scap-open: passed, kernel warning" });
    expect(await link.getAttribute("title")).toContain("kernel warning: [  142.318201] WARNING: CPU: 1");
    // Still green: the cell's background is the pass colour of a plain pass.
    const bg = (l: typeof warned) => l.evaluate((e) => getComputedStyle(e).backgroundColor);
    expect(await bg(warned)).toBe(await bg(cell("debian-bookworm-6.1", "cmake-configure")));

    await link.click();
    const dialog = dialogOf("debian-bookworm-6.1@x86_64", "modern-bpf_scap-open");
    await dialog.waitFor({ state: "visible", timeout: 5000 });
    expect(await dialog.locator("h3").allTextContents()).toContain("Kernel warning");
    expect(await dialog.locator("pre.warning").textContent()).toBe(
      "[  142.318201] WARNING: CPU: 1 PID: 2231 at kernel/bpf/ringbuf.c:312 bpf_ringbuf_reserve+0x5e/0x80",
    );
    expect(await dialog.locator("pre.dmesg").textContent()).toContain("Modules linked in: <scap> & friends");
    expect(await dialog.locator("p.boot").textContent()).toBe(
      "ran on boot 2 of the machine: an earlier test left it in doubt",
    );
    expect(page.url()).toMatch(/#debian-bookworm-61-modern-bpf_scap-open$/);
    await page.screenshot({ path: path.join(ARTIFACTS, "report-x86_64-kernel-warning.png") });
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden", timeout: 5000 });

    // Another dialog names the processes its test left behind.
    await cell("debian-bullseye-5.10", "kmod_scap-open").locator("a").click();
    const failed = dialogOf("debian-bullseye-5.10@x86_64", "kmod_scap-open");
    await failed.waitFor({ state: "visible", timeout: 5000 });
    expect(await failed.locator("pre.leftover").textContent()).toContain("4121 sleep 1000");
    await page.keyboard.press("Escape");
  });

  it("fits a phone: only the table scrolls sideways", async () => {
    await page.setViewportSize({ width: 375, height: 740 });
    await page.goto(xUrl);
    const m = await page.evaluate(() => {
      const wrap = document.querySelector(".scroll") as HTMLElement;
      return {
        doc: document.documentElement.scrollWidth,
        vw: innerWidth,
        wrap: wrap.scrollWidth,
        box: wrap.clientWidth,
      };
    });
    expect(m.doc).toBeLessThanOrEqual(m.vw);
    expect(m.wrap).toBeGreaterThan(m.box);
    await page.screenshot({ path: path.join(ARTIFACTS, "report-x86_64-phone.png") });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it("follows the dark colour scheme", async () => {
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({ colorScheme: "light" });
    await page.goto(xUrl);
    const light = await bg();
    await page.emulateMedia({ colorScheme: "dark" });
    const dark = await bg();
    expect(light).toBe("rgb(255, 255, 255)");
    expect(dark).not.toBe(light);
    await page.screenshot({ path: path.join(ARTIFACTS, "report-x86_64-dark.png") });
    await page.emulateMedia({ colorScheme: "light" });
  });

  it("index page shows the glossary and both architectures", async () => {
    await page.goto(xUrl.replace(/x86_64\.html$/, "index.html"));
    const text = await page.locator("main").textContent();
    for (const s of ["🟢", "🟡", "❌", "⚠️", "❔", "harness error"]) expect(text).toContain(s);
    expect(await page.locator("section[data-arch]").count()).toBe(2);
    expect(await page.locator('section[data-arch="x86_64"] ul.replaced li').allTextContents()).toEqual([
      "debian-bookworm-6.1: boot 2 after bpf-probe_scap-open (the kernel panicked)",
    ]);
    await page.click('a[href="aarch64.html"] >> nth=0');
    await page.waitForURL(/aarch64\.html$/);
    expect(await page.locator('td[data-verdict="missing"]').count()).toBe(2);
  });

  it("junit.xml is well-formed XML to a real parser", async () => {
    const xml = await readFile(path.join(tmp, "run", "report", "junit.xml"), "utf8");
    const r = await page.evaluate((text) => {
      const doc = new DOMParser().parseFromString(text, "application/xml");
      return {
        error: doc.querySelector("parsererror")?.textContent ?? "",
        cases: doc.querySelectorAll("testcase").length,
      };
    }, xml);
    expect(r).toEqual({ error: "", cases: 36 });
  });

  it("loaded nothing from the network and threw no script error", () => {
    expect(requests.filter((u) => !u.startsWith("file:"))).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
