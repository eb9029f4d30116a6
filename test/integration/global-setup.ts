import { prepareImage } from "../../src/images/index.js";
import { checkHostTools, missingHostToolsMessage } from "../../src/vm/host-tools.js";
import { defaultMatrix, machine } from "./helpers.js";

/**
 * Checks the host first (the doctor's list, src/vm/host-tools.ts): a missing package stops the run
 * here with its name, not an image build minutes later with mmdebstrap's message.
 * Then builds (or finds) every image the integration tests boot, two at a time: on an empty cache
 * this halves the wait, since a root disk build is mostly single-threaded (apt, dpkg, qemu-user).
 */
export default async function setup(): Promise<void> {
  const missing = await checkHostTools();
  if (missing.length) throw new Error(`integration tests: ${missingHostToolsMessage(missing)}`);

  const wanted = [
    machine("debian-bookworm-6.1", "aarch64"),
    machine("debian-bullseye-5.10", "aarch64"),
    machine("debian-bookworm-6.1", "x86_64"),
    machine("debian-bullseye-5.10", "x86_64"),
  ];
  const started = Date.now();
  const queue = [...wanted];
  const worker = async () => {
    for (let m = queue.shift(); m; m = queue.shift()) {
      const t0 = Date.now();
      await prepareImage(m, { archive: defaultMatrix.archive });
      console.log(`image ${m.id} ready in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  };
  await Promise.all([worker(), worker()]);
  console.log(`integration images ready in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
