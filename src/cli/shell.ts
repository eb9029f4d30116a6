import type { Machine, Matrix } from "../config/types.js";
import { launchMachine } from "../guest/launch.js";
import { BootError, GuestFault } from "../guest/session.js";
import { shellJoin } from "../util/shell-quote.js";
import { createRunDir, removeRunDir } from "../vm/run-dirs.js";
import { progress } from "./log.js";

/** `kmatrix shell`: boot, run one command (or a login shell on a TTY), tear down; the command's exit code. */
export async function runShell(matrix: Matrix, machine: Machine, command: string[]): Promise<number> {
  const runDir = await createRunDir();
  try {
    const { session } = await launchMachine(machine, { archive: matrix.archive, runDir, log: progress });
    try {
      progress(`${machine.id}: ready in ${(session.timings.usableMs / 1000).toFixed(1)} s`);
      if (command.length === 0) {
        if (!process.stdin.isTTY) throw new Error("no command given and stdin is not a terminal");
        return await session.guest.interactive();
      }
      const result = await session.run(shellJoin(command), {
        onStdout: (c) => process.stdout.write(c),
        onStderr: (c) => process.stderr.write(c),
      });
      return result.exitCode ?? 1;
    } finally {
      await session.stop();
    }
  } catch (err) {
    if (err instanceof BootError || err instanceof GuestFault) {
      progress(`${machine.id}: ${err.message}\n--- console (last lines) ---\n${err.consoleTail}`);
      return 1;
    }
    throw err;
  } finally {
    await removeRunDir(runDir);
  }
}
