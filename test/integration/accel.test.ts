import { describe, expect, it } from "vitest";
import type { Arch } from "../../src/config/types.js";
import { prepareImage } from "../../src/images/index.js";
import { runFirmwareProbe, runKernelProbe } from "../../src/vm/accel.js";
import { defaultMatrix, machine } from "./helpers.js";

// The KVM probe is only trustworthy if it can succeed: under TCG both stages must pass.
describe.each<Arch>(["x86_64", "aarch64"])("accelerator probe on %s", (arch) => {
  it("runs its firmware and boots a kernel to init under TCG", async () => {
    expect(await runFirmwareProbe(arch, "tcg")).toMatchObject({ ok: true });
    const image = await prepareImage(machine("debian-bookworm-6.1", arch), {
      archive: defaultMatrix.archive,
    });
    const probe = await runKernelProbe(
      arch,
      "tcg",
      { kernel: image.vmlinuz, bareInitrd: image.bareInitrd },
      { deadlineMs: 120_000 },
    );
    expect(probe, probe.reason).toMatchObject({ ok: true });
  });
});
