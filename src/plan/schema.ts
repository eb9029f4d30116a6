import { z } from "zod";
import { ARCHES } from "../config/types.js";

const Name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "expected a name of letters, digits, '.', '_' or '-'");
const KernelVersion = z.string().regex(/^\d+\.\d+(\.\d+)?$/, 'expected a kernel version such as "5.8"');
const Seconds = z.number().int().positive();

export const BuilderSchema = z.strictObject({
  name: Name,
  /** A machine name of the matrix; the builder runs once per architecture on it. */
  machine: Name,
  command: z.string().min(1),
  needs: z.array(Name).default([]),
  timeoutSec: Seconds.default(1800),
});

export const TestSchema = z.strictObject({
  name: Name,
  command: z.string().min(1),
  /** Earlier tests that must pass first. */
  needs: z.array(Name).default([]),
  /** Builders whose artifacts the test needs. */
  uses: z.array(Name).default([]),
  minKernel: z.partialRecord(z.enum(ARCHES), KernelVersion).default({}),
  /** Exit codes meaning "this driver is not supported by this kernel": the cell is skipped. */
  unsupportedExitCodes: z.array(z.number().int().min(0).max(255)).default([]),
  timeoutSec: Seconds.default(900),
});

export const PlanFileSchema = z.strictObject({
  name: Name,
  description: z.string().optional(),
  /** name → a directory (relative to the plan file) or `git-url@ref`. */
  sources: z.record(Name, z.string().min(1)).default({}),
  builders: z.array(BuilderSchema).default([]),
  tests: z.array(TestSchema).min(1),
});

export type PlanFile = z.output<typeof PlanFileSchema>;
export type BuilderSpec = z.output<typeof BuilderSchema>;
export type TestSpec = z.output<typeof TestSchema>;
