/**
 * Node.js module hooks that run the TypeScript sources directly (transpiled with the project's
 * own `typescript`, no type checking), so that a plain `node` child process can import src/ and
 * tests/ the way vitest does. Used by the loader fuzz, which loads models in a child process so
 * that a native crash is detected instead of killing the test run. Register with
 * `node --import ./tests/fuzz/register-ts.mjs`.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

import ts from "typescript";

/** `./x.js` imports of TypeScript sources resolve to `./x.ts` when that file exists. */
export async function resolve(specifier, context, nextResolve) {
  const relative = specifier.startsWith("./") || specifier.startsWith("../") || specifier.startsWith("/");
  if (relative && specifier.endsWith(".js") && context.parentURL?.startsWith("file:")) {
    const url = new URL(`${specifier.slice(0, -3)}.ts`, context.parentURL);
    if (existsSync(fileURLToPath(url))) return { url: url.href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith("file:") || !url.endsWith(".ts")) return nextLoad(url, context);
  const fileName = fileURLToPath(url);
  const { outputText } = ts.transpileModule(await readFile(fileName, "utf8"), {
    fileName,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true },
  });
  return { format: "module", source: outputText, shortCircuit: true };
}
