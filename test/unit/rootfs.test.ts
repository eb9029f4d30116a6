import { describe, expect, it } from "vitest";
import type { ResolvedKernel } from "../../src/images/debian-archive.js";
import { BASE_PACKAGES, rootfsRecipe } from "../../src/images/rootfs.js";

const kernel = {
  release: "6.1.0-56-cloud-amd64",
  headersPackage: "linux-headers-6.1.0-56-cloud-amd64",
  debArch: "amd64",
  suites: ["bookworm", "bookworm-updates", "bookworm-security"],
} as ResolvedKernel;

describe("rootfsRecipe", () => {
  it("takes everything from the suite, kernel build packages from -updates/-security", () => {
    const r = rootfsRecipe(kernel, "bookworm", ["strace"]);
    expect(r.packages).toEqual([...BASE_PACKAGES, "linux-headers-6.1.0-56-cloud-amd64", "strace"]);
    expect(r.suites).toEqual(kernel.suites);
    expect(r.preferences).toBe(
      [
        "Package: *\nPin: release n=bookworm\nPin-Priority: 990\n",
        "Package: linux-headers-* linux-kbuild-* linux-compiler-*\nPin: release n=bookworm-updates\nPin-Priority: 995\n",
        "Package: linux-headers-* linux-kbuild-* linux-compiler-*\nPin: release n=bookworm-security\nPin-Priority: 995\n",
      ].join("\n"),
    );
  });

  it("adds the suite of a `name/suite` package and pins just those packages to it", () => {
    const r = rootfsRecipe(kernel, "bookworm", [
      "cmake",
      "libbpf-dev/bookworm-backports",
      "bpftool/bookworm-backports",
    ]);
    expect(r.packages).toEqual(expect.arrayContaining(["cmake", "libbpf-dev", "bpftool"]));
    expect(r.packages.filter((p) => p.includes("/"))).toEqual([]);
    expect(r.suites).toEqual([...kernel.suites, "bookworm-backports"]);
    expect(r.preferences).toContain(
      "Package: libbpf-dev bpftool\nPin: release n=bookworm-backports\nPin-Priority: 995\n",
    );
  });
});
