#!/usr/bin/env node
import { Command } from "commander";
import { UsageError } from "../util/errors.js";
import { registerCommands } from "./commands.js";

const program = new Command("kmatrix")
  .description("Test Linux kernel drivers across a matrix of kernels in QEMU micro-VMs")
  .showHelpAfterError()
  .exitOverride();
registerCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = exitCodeFor(err);
}

function exitCodeFor(err: unknown): number {
  const e = err as { code?: string; exitCode?: number; message?: string };
  // commander has already printed its own usage errors (and help/version, which exit 0).
  if (typeof e.code === "string" && e.code.startsWith("commander.")) return e.exitCode === 0 ? 0 : 2;
  console.error(`kmatrix: ${e.message ?? String(err)}`);
  return err instanceof UsageError ? 2 : 1;
}
