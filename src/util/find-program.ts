import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";

/** The path of `program` on $PATH, if it is there (no shell involved). */
export async function findProgram(program: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(delimiter).filter(Boolean)) {
    const path = join(dir, program);
    if (
      await access(path, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return path;
  }
  return undefined;
}
