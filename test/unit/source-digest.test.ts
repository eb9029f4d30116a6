import { chmod, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { digestSource } from "../../src/util/sources.js";

describe("digestSource", () => {
  it("changes with a file's content, name or executable bit, not with git metadata", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kmx-digest-"));
    await mkdir(join(dir, "sub"));
    await mkdir(join(dir, ".git"));
    await writeFile(join(dir, "sub", "a.c"), "int a;\n");
    await writeFile(join(dir, "b.sh"), "echo b\n");
    const first = await digestSource({ dir });
    await writeFile(join(dir, ".git", "HEAD"), "ref: x\n");
    expect(await digestSource({ dir })).toBe(first);
    await chmod(join(dir, "b.sh"), 0o755);
    const executable = await digestSource({ dir });
    expect(executable).not.toBe(first);
    await writeFile(join(dir, "sub", "a.c"), "int a = 1;\n");
    expect(await digestSource({ dir })).not.toBe(executable);
    // Only the listed files count when the source lists them (a git work tree).
    expect(await digestSource({ dir, files: ["b.sh"] })).toBe(await digestSource({ dir, files: ["b.sh"] }));
    expect(await digestSource({ dir, files: ["b.sh"] })).not.toBe(await digestSource({ dir }));
  });
});
