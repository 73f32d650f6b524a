/**
 * Node.js module hooks that run the TypeScript sources directly, so that a plain `node` child
 * process (the reliability tests' and the fuzzers') can import src/ and tests/ as vitest does:
 * transpiled with the project's own `typescript` (no type checking), the output cached in
 * tests/.fixtures/ts-cache/ (keyed by a hash of the source), so that children start in a
 * fraction of a second. Register with
 * `node --import ./tests/helpers/register-ts-cached.mjs`.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const cacheDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".fixtures", "ts-cache");
let ts;

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
  const source = readFileSync(fileName, "utf8");
  const key = createHash("sha256").update(fileName).update("\0").update(source).digest("hex").slice(0, 32);
  const cached = path.join(cacheDir, `${key}.js`);
  if (existsSync(cached)) return { format: "module", source: readFileSync(cached, "utf8"), shortCircuit: true };
  ts ??= (await import("typescript")).default;
  const { outputText } = ts.transpileModule(source, {
    fileName,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true },
  });
  mkdirSync(cacheDir, { recursive: true });
  const temp = `${cached}.${process.pid}.tmp`;
  writeFileSync(temp, outputText);
  renameSync(temp, cached);
  return { format: "module", source: outputText, shortCircuit: true };
}
