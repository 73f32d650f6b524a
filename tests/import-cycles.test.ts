/**
 * No import cycle among the modules of src/: a module that imports (directly or through others) a
 * module that imports it back runs against a half-initialised module when the cycle is entered
 * from the other side, and ties the modules so that neither can be understood (or loaded) alone.
 *
 * The graph holds the imports that exist at run time: each file is compiled with TypeScript's
 * own transpiler and the static `import` / `export ... from` declarations of the JavaScript it
 * emits are read, so `import type`, `import { type X }` and names used only as types (all
 * erased) are not edges. Dynamic `import()` is not an edge either (it runs after every module is
 * linked). Type-only cycles (model ⇄ context ⇄ session, through the `model` and `context` parent
 * properties) are allowed: they are erased from the JavaScript.
 */
import fs from "node:fs";
import path from "node:path";

import ts from "typescript";
import { describe, expect, it } from "vitest";

import { repoRoot } from "./helpers/fixtures.js";

/** Module name → the modules it imports (names relative to the source root, "a/b.ts"). */
type ImportGraph = Map<string, string[]>;

const SRC = path.join(repoRoot, "src");

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.isFile() && entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts") ? [full] : [];
  });
}

/** The module specifiers of a file's static import and export-from declarations. */
function staticSpecifiers(fileName: string, text: string): string[] {
  const file = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
  const out: string[] = [];
  for (const statement of file.statements) {
    if (!ts.isImportDeclaration(statement) && !ts.isExportDeclaration(statement)) continue;
    const spec = statement.moduleSpecifier;
    if (spec !== undefined && ts.isStringLiteral(spec)) out.push(spec.text);
  }
  return out;
}

/** The JavaScript TypeScript emits for a file: type-only imports are gone. */
function emitted(fileName: string, text: string): string {
  return ts.transpileModule(text, {
    fileName,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
}

/** The run-time imports between the .ts files under `root` (relative specifiers only). */
function runtimeImportGraph(root: string): ImportGraph {
  const graph: ImportGraph = new Map();
  for (const file of sourceFiles(root)) {
    const deps = staticSpecifiers(file, emitted(file, fs.readFileSync(file, "utf8")))
      .filter((spec) => spec.startsWith("./") || spec.startsWith("../"))
      .map((spec) => {
        // NodeNext: "./x.js" is ./x.ts in the sources.
        const target = path.resolve(path.dirname(file), spec.replace(/\.js$/, ".ts"));
        return path.relative(root, target).split(path.sep).join("/");
      });
    graph.set(path.relative(root, file).split(path.sep).join("/"), [...new Set(deps)]);
  }
  return graph;
}

/**
 * Every cycle's strongly connected component (Tarjan), each given as one concrete cycle through
 * its first module: ["a.ts", "b.ts", "a.ts"]. A module that imports itself is a cycle of one.
 */
function findCycles(graph: ImportGraph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(component.sort());
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return components.map((component) => shortestCycle(graph, component[0], new Set(component)));
}

/** The shortest path from `start` back to itself inside one component (breadth first). */
function shortestCycle(graph: ImportGraph, start: string, within: Set<string>): string[] {
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!within.has(w)) continue;
      if (w === start) {
        const route: string[] = [];
        for (let u: string | undefined = v; u !== undefined && u !== start; u = previous.get(u)) route.unshift(u);
        return [start, ...route, start];
      }
      if (!previous.has(w)) {
        previous.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

const describeCycles = (cycles: string[][]) => cycles.map((c) => c.join(" → ")).join("\n");

describe("import cycles", () => {
  it("the checker finds a cycle, names it, and passes a graph without one", () => {
    const cyclic: ImportGraph = new Map([
      ["index.ts", ["model.ts"]],
      ["model.ts", ["context.ts", "errors.ts"]],
      ["context.ts", ["session.ts", "errors.ts"]],
      ["session.ts", ["model.ts", "errors.ts"]],
      ["errors.ts", []],
      ["self.ts", ["self.ts"]],
    ]);
    expect(findCycles(cyclic)).toEqual([
      ["context.ts", "session.ts", "model.ts", "context.ts"],
      ["self.ts", "self.ts"],
    ]);
    cyclic.set("session.ts", ["tokens.ts", "errors.ts"]);
    cyclic.set("self.ts", []);
    expect(findCycles(cyclic)).toEqual([]);
  });

  it("reads only the imports that exist at run time", () => {
    const source = [
      'import type { Context } from "./context.js";',
      'import { type Model } from "./model.js";',
      'import { Shape } from "./shape.js";',
      'import { toTokenArray } from "./tokens.js";',
      'import "./side-effect.js";',
      'export { Session } from "./session.js";',
      'export type { Options } from "./options.js";',
      'const lazy = () => import("./lazy.js");',
      "export function f(c: Context, m: Model, s: Shape) { return [c, m, s, lazy, toTokenArray([])]; }",
    ].join("\n");
    expect(staticSpecifiers("x.ts", emitted("x.ts", source))).toEqual([
      "./tokens.js",
      "./side-effect.js",
      "./session.js",
    ]);
  });

  it("src/ has no run-time import cycle", () => {
    const graph = runtimeImportGraph(SRC);
    // The walk saw the core modules and their edges (a broken resolver would pass vacuously).
    expect(graph.get("session.ts")).toContain("tokens.ts");
    expect(graph.get("index.ts")).toContain("model.ts");
    const cycles = findCycles(graph);
    expect(cycles, `import cycles in src/:\n${describeCycles(cycles)}`).toEqual([]);
  });
});
