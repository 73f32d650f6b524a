/**
 * Files under a live process: a model file replaced or truncated while loaded, model paths that
 * are directories, dangling symlinks, pipes or unreadable files, state files that are truncated
 * or corrupted, and saves that fail or are killed midway (the existing file must survive).
 *
 * With mmap (llama.cpp's default) the weights are read from the page cache of the file itself:
 * - replacing the file by rename (the way to update a model: write elsewhere, then rename) keeps
 *   the old inode alive under the mapping: safe, checked below;
 * - truncating or rewriting it in place takes the pages away and the next decode gets SIGBUS,
 *   as with any program that maps a file (llama.cpp's own tools included). Checked below in a
 *   child process, so that the README's warning stays true; useMmap: false reads the weights
 *   into memory and is immune, also checked below.
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { GgmlType, LlamaError, ggufValue, loadModel, writeGguf, type Model } from "../src/index.js";
import { fixturePath, repoRoot } from "./helpers/fixtures.js";

const gpt2 = fixturePath("gpt2-tiny-f32");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llama-napi-files-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function greedy(model: Model, prompt: string, n = 8): Promise<number[]> {
  using context = await model.createContext({ contextSize: 64, threads: 1 });
  using session = context.createSession();
  await session.prompt(prompt);
  return (await session.generate({ temperature: 0, maxTokens: n }).collect()).tokens;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<LlamaError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(LlamaError);
  expect((err as LlamaError).code, (err as Error).message).toBe(code);
  return err as LlamaError;
}

/** Runs a script in a child node process that imports src/ (TypeScript) like the tests do. */
function runScript(source: string, env: NodeJS.ProcessEnv = {}, shellPrefix = ""): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const file = path.join(tmp, `child-${Math.random().toString(36).slice(2)}.ts`);
  fs.writeFileSync(file, source);
  const loader = path.join(repoRoot, "tests/helpers/register-ts-cached.mjs");
  const argv = [process.execPath, "--import", loader, file].map((a) => `'${a}'`).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", `${shellPrefix}exec ${argv}`], { cwd: repoRoot, env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none", ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const srcIndex = path.join(repoRoot, "src/index.ts");

describe("a model file changed while it is loaded", () => {
  it("replacing the file by rename keeps the loaded model working (mmap and read)", async () => {
    for (const useMmap of [true, false]) {
      const file = path.join(tmp, `replace-${useMmap}.gguf`);
      fs.copyFileSync(gpt2, file);
      using model = await loadModel(file, { useMmap });
      const before = await greedy(model, "Hello world");
      // Another model (the F16 fixture) takes its place atomically.
      const next = `${file}.next`;
      fs.copyFileSync(fixturePath("gpt2-tiny-f16"), next);
      fs.renameSync(next, file);
      expect(await greedy(model, "Hello world")).toEqual(before);
      // A new load sees the new file.
      using reloaded = await loadModel(file, { useMmap });
      expect(reloaded.info.fileType).not.toBe(model.info.fileType);
    }
  });

  it("with useMmap: false, truncating the file under a loaded model is harmless", async () => {
    const file = path.join(tmp, "truncate-read.gguf");
    fs.copyFileSync(gpt2, file);
    using model = await loadModel(file, { useMmap: false });
    const before = await greedy(model, "Hello world");
    fs.truncateSync(file, 1000);
    expect(await greedy(model, "Hello world")).toEqual(before);
    await expectCode(loadModel(file), "ERR_GGUF_INVALID");
  });

  it("with mmap, truncating the file in place under a loaded model is SIGBUS on the next decode (documented hazard)", async () => {
    const file = path.join(tmp, "truncate-mmap.gguf");
    fs.copyFileSync(gpt2, file);
    const r = await runScript(
      `import fs from "node:fs";
       import { loadModel } from ${JSON.stringify(srcIndex)};
       const model = await loadModel(${JSON.stringify(file)});
       const context = await model.createContext({ contextSize: 64, threads: 1 });
       const session = context.createSession();
       await session.prompt("Hello");
       fs.truncateSync(${JSON.stringify(file)}, 4096);
       await session.prompt("Hello world, this touches every weight again");
       console.log("SURVIVED");`,
      // The expected SIGBUS must not count as a sanitizer report under npm run test:asan.
      { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ?? ""}:handle_sigbus=0`.replace(/^:/, "") },
    );
    expect(r.stdout).not.toContain("SURVIVED");
    expect(r.signal, r.stderr).toBe("SIGBUS");
  });
});

describe("model paths that are not model files", () => {
  it("a directory, a dangling symlink, a pipe, a device, an empty file and a header-only file get typed errors", async () => {
    const dangling = path.join(tmp, "dangling.gguf");
    fs.symlinkSync(path.join(tmp, "nowhere.gguf"), dangling);
    const loop = path.join(tmp, "loop.gguf");
    fs.symlinkSync(loop, loop);
    const empty = path.join(tmp, "empty.gguf");
    fs.writeFileSync(empty, "");
    const magicOnly = path.join(tmp, "magic.gguf");
    fs.writeFileSync(magicOnly, "GGUF");
    const cases: Array<[string, string]> = [
      [tmp, "ERR_FILE_UNREADABLE"],
      [dangling, "ERR_FILE_NOT_FOUND"],
      [loop, "ERR_FILE_UNREADABLE"],
      [path.join(gpt2, "inside"), "ERR_FILE_NOT_FOUND"],
      ["/dev/zero", "ERR_FILE_UNREADABLE"],
      [empty, "ERR_GGUF_INVALID"],
      [magicOnly, "ERR_GGUF_INVALID"],
    ];
    // A FIFO with no writer: opening it for reading would block the loader thread forever.
    const fifo = path.join(tmp, "model.fifo");
    if (spawnSync("mkfifo", [fifo]).status === 0) cases.push([fifo, "ERR_FILE_UNREADABLE"]);
    else console.warn("files: mkfifo is not available; the FIFO case is skipped");
    for (const [file, code] of cases) {
      const err = await expectCode(loadModel(file), code);
      expect(err.message).toContain(file);
    }
  });

  it("an unreadable file (chmod 000) is ERR_FILE_UNREADABLE", async () => {
    const file = path.join(tmp, "unreadable.gguf");
    fs.copyFileSync(gpt2, file);
    fs.chmodSync(file, 0o000);
    let readable = true;
    try {
      fs.closeSync(fs.openSync(file, "r"));
    } catch {
      readable = false;
    }
    if (readable) {
      // Root (CAP_DAC_OVERRIDE) reads it anyway: nothing to check here.
      console.warn(`files: the chmod 000 case is skipped: this process (uid ${process.getuid?.()}) can read mode-000 files`);
      return;
    }
    await expectCode(loadModel(file), "ERR_FILE_UNREADABLE");
  });
});

describe("state files", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(gpt2);
  });
  afterAll(() => model?.dispose());

  it("truncated and corrupted state files are refused with ERR_STATE and leave the session as it was", async () => {
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await session.prompt("The state of this session is saved");
    const file = path.join(tmp, "good.state");
    await session.saveStateFile(file);
    const good = fs.readFileSync(file);
    await session.prompt("Something else entirely");
    const tokens = [...session.tokens];
    const logits = session.logits().slice();
    const bad = path.join(tmp, "bad.state");
    for (const length of [0, 1, 7, 8, 12, 27, 28, 100, good.length >> 1, good.length - 8, good.length - 1]) {
      fs.writeFileSync(bad, good.subarray(0, length));
      await expectCode(session.loadStateFile(bad), "ERR_STATE");
      expect([...session.tokens]).toEqual(tokens);
    }
    fs.writeFileSync(bad, Buffer.concat([good, Buffer.from([1, 2, 3])]));
    await expectCode(session.loadStateFile(bad), "ERR_STATE");
    // Random byte flips: a typed error or a successful load, never a crash.
    let seed = 12345;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const outcomes: Record<string, number> = {};
    for (let i = 0; i < 150; i++) {
      const copy = Buffer.from(good);
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips; k++) {
        // Most flips land in the headers, where the parsing happens.
        const at = rand() < 0.7 ? Math.floor(rand() * Math.min(copy.length, 64 + 4 * 64)) : Math.floor(rand() * copy.length);
        copy[at] ^= 1 << Math.floor(rand() * 8);
      }
      try {
        await session.loadState(copy);
        outcomes.loaded = (outcomes.loaded ?? 0) + 1;
      } catch (err) {
        expect(err).toBeInstanceOf(LlamaError);
        const code = (err as LlamaError).code;
        outcomes[code] = (outcomes[code] ?? 0) + 1;
      }
    }
    console.log(`files: 150 corrupted states: ${JSON.stringify(outcomes)}`);
    // The session still loads the good state and matches what was saved.
    await session.loadStateFile(file);
    await session.prompt("Something else entirely");
    expect([...session.tokens]).toEqual(tokens);
    const after = session.logits();
    let max = 0;
    for (let i = 0; i < after.length; i++) max = Math.max(max, Math.abs(after[i] - logits[i]));
    expect(max).toBeLessThan(1e-4);
  });

  it("a state file path that is a directory or a FIFO is refused, without blocking", async () => {
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    await expectCode(session.loadStateFile(tmp), "ERR_FILE_UNREADABLE");
    const fifo = path.join(tmp, "state.fifo");
    if (spawnSync("mkfifo", [fifo]).status === 0) await expectCode(session.loadStateFile(fifo), "ERR_FILE_UNREADABLE");
  });

  it("a save that fails midway (file size limit) leaves the existing file intact and no temporary file", async () => {
    const dir = path.join(tmp, "efbig");
    fs.mkdirSync(dir);
    const file = path.join(dir, "session.state");
    // The existing file: a complete state saved without limits.
    {
      using context = await model.createContext({ contextSize: 64, threads: 1 });
      using session = context.createSession();
      await session.prompt("The original state");
      await session.saveStateFile(file);
    }
    const original = fs.readFileSync(file);
    expect(original.length).toBeGreaterThan(100_000);
    // A child limited to 64 KiB files (RLIMIT_FSIZE holds for root too): the write fails with
    // EFBIG once past the limit (SIGXFSZ is handled so that it is an error, not a kill).
    const r = await runScript(
      `import { loadModel } from ${JSON.stringify(srcIndex)};
       process.on("SIGXFSZ", () => {});
       const model = await loadModel(${JSON.stringify(gpt2)});
       const context = await model.createContext({ contextSize: 64, threads: 1 });
       const session = context.createSession();
       await session.prompt("A different, newer state that will not fit");
       try {
         await session.saveStateFile(${JSON.stringify(file)});
         console.log("SAVED");
       } catch (err) {
         console.log("FAILED " + err.code + " " + err.message);
       }
       model.dispose();`,
      {},
      "ulimit -f 128; ",
    );
    expect(r.signal, r.stderr).toBeNull();
    expect(r.stdout, r.stderr).toMatch(/FAILED ERR_STATE .*(EFBIG|too large)/i);
    expect(fs.readFileSync(file).equals(original)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["session.state"]);
  });

  it("a process killed while saving never leaves a partial file behind the name", async () => {
    const dir = path.join(tmp, "killed");
    fs.mkdirSync(dir);
    const file = path.join(dir, "session.state");
    const script = `import { loadModel } from ${JSON.stringify(srcIndex)};
       const model = await loadModel(${JSON.stringify(gpt2)});
       const context = await model.createContext({ contextSize: 64, threads: 1 });
       const session = context.createSession();
       await session.prompt("Saving over and over");
       console.log("READY");
       for (let i = 0; ; i++) {
         await session.prompt([11 + (i % 50)], { append: true });
         if (session.length > 60) session.truncate(4);
         await session.saveStateFile(${JSON.stringify(file)});
       }`;
    const child = path.join(tmp, "saver.ts");
    fs.writeFileSync(child, script);
    using context = await model.createContext({ contextSize: 64, threads: 1 });
    using session = context.createSession();
    let kills = 0;
    let midWrite = 0;
    const rounds = process.env.LLAMA_NAPI_STRESS === "1" ? 20 : 4;
    for (let round = 0; round < rounds; round++) {
      const proc = spawn(process.execPath, ["--import", path.join(repoRoot, "tests/helpers/register-ts-cached.mjs"), child], {
        cwd: repoRoot,
        env: { ...process.env, LLAMA_NAPI_LOG_LEVEL: "none" },
        stdio: ["ignore", "pipe", "inherit"],
      });
      await new Promise<void>((resolve) => proc.stdout.on("data", (d: Buffer) => d.toString().includes("READY") && resolve()));
      await new Promise((resolve) => setTimeout(resolve, 150 + 97 * (round % 7)));
      proc.kill("SIGKILL");
      await new Promise((resolve) => proc.on("exit", resolve));
      kills++;
      // Whatever the moment of the kill, the name holds a complete state (or none yet).
      if (fs.existsSync(file)) await session.loadStateFile(file);
      // A temporary file left behind: the kill landed in the middle of a write.
      for (const f of fs.readdirSync(dir)) {
        if (!f.endsWith(".tmp")) continue;
        midWrite++;
        fs.rmSync(path.join(dir, f));
      }
    }
    console.log(`files: ${kills} saving processes killed, ${midWrite} of them in the middle of writing the temporary file`);
    expect(kills).toBe(rounds);
    expect(fs.existsSync(file)).toBe(true);
    expect(session.length).toBeGreaterThan(0);
  });
});

describe("inputs the fuzzers found (tests/fuzz/native/regressions)", () => {
  // ggml stores a file's raw type fields in enums before range-checking them: undefined
  // behaviour that UBSan stops on. The addon refuses such files before ggml reads them.
  it("a metadata type, an array item type and a tensor type out of range, or a file ending before a value type, are ERR_GGUF_INVALID", async () => {
    const file = path.join(tmp, "types.gguf");
    await writeGguf(file, {
      metadata: { "general.architecture": ggufValue.string("gpt2"), "x.list": ggufValue.array("uint32", [1, 2]) },
      tensors: [{ name: "w", shape: [4, 2], type: GgmlType.F32, data: new Float32Array(8) }],
    });
    const good = fs.readFileSync(file);
    // Offsets: 24-byte header, then each key (u64 length + bytes) and its u32 type.
    const archType = 24 + 8 + "general.architecture".length;
    const listType = archType + 4 + 8 + "gpt2".length + 8 + "x.list".length;
    const tensorType = listType + 4 + 4 + 8 + 2 * 4 + 8 + 1 + 4 + 2 * 8;
    expect(good.readUInt32LE(archType)).toBe(8); // GGUF_TYPE_STRING
    expect(good.readUInt32LE(listType)).toBe(9); // GGUF_TYPE_ARRAY
    expect(good.readUInt32LE(listType + 4)).toBe(4); // items: GGUF_TYPE_UINT32
    expect(good.readUInt32LE(tensorType)).toBe(0); // GGML_TYPE_F32
    const cases: Array<[number, number, RegExp]> = [
      [archType, 2149, /metadata value 0 has type 2149, not a GGUF type/],
      [archType, 0xffffffff, /metadata value 0 has type -1, not a GGUF type/],
      [listType + 4, 77, /metadata array 1 has items of type 77, not a GGUF type/],
      [tensorType, 4096, /tensor 0 has type 4096, not a ggml type/],
    ];
    for (const [offset, value, message] of cases) {
      const bad = Buffer.from(good);
      bad.writeUInt32LE(value >>> 0, offset);
      const out = path.join(tmp, `types-${offset}-${value}.gguf`);
      fs.writeFileSync(out, bad);
      const err = await expectCode(loadModel(out), "ERR_GGUF_INVALID");
      expect(err.message).toMatch(message);
    }
    // Cut right after a key: ggml would compare the value type it failed to read (-1).
    const cut = path.join(tmp, "types-cut.gguf");
    fs.writeFileSync(cut, good.subarray(0, listType));
    expect((await expectCode(loadModel(cut), "ERR_GGUF_INVALID")).message).toMatch(/metadata value 1 runs past the end of the file/);
    const regressions = path.join(repoRoot, "tests/fuzz/native/regressions");
    expect((await expectCode(loadModel(path.join(regressions, "gguf-value-type-out-of-enum.gguf")), "ERR_GGUF_INVALID")).message).toMatch(/not a GGUF type/);
    expect((await expectCode(loadModel(path.join(regressions, "gguf-ends-before-value-type.gguf")), "ERR_GGUF_INVALID")).message).toMatch(/runs past the end/);
    for (const name of ["gguf-tensor-elements-overflow.gguf", "loader-tensor-elements-overflow.gguf"]) {
      expect((await expectCode(loadModel(path.join(regressions, name)), "ERR_GGUF_INVALID")).message).toMatch(/more elements than a 64-bit count can hold/);
    }
    // llama.cpp leaks its metadata context when general.architecture is not a string (LeakSanitizer).
    const arch = await expectCode(loadModel(path.join(regressions, "loader-architecture-not-a-string.gguf")), "ERR_GGUF_INVALID");
    expect(arch.message).toMatch(/general\.architecture is a f32, not a string/);
    // llama.cpp aborts (GGML_ABORT) loading a WordPiece vocabulary with a token typed as a byte.
    const wpm = await expectCode(loadModel(path.join(regressions, "loader-wordpiece-byte-token.gguf")), "ERR_GGUF_INVALID");
    expect(wpm.message).toMatch(/token 214 is typed as a byte token .* WordPiece/);
  });

  it("a SentencePiece vocabulary without byte tokens: tokenizing what needs them is a typed error, not an abort", async () => {
    // Found by the loader fuzzer: llama.cpp's SPM tokenizer looks up <0xNN> with
    // unordered_map::at and lets std::out_of_range escape llama_tokenize (std::terminate).
    using model = await loadModel(path.join(repoRoot, "tests/fuzz/native/regressions/loader-spm-missing-byte-token.gguf"));
    expect(model.info.vocabType).toBe("spm");
    expect(() => model.tokenize("Hello world, <|endoftext|> 123")).toThrow(
      expect.objectContaining({ code: "ERR_UNSUPPORTED", message: expect.stringMatching(/byte token/) }),
    );
    // Text the vocabulary covers still tokenizes, and the model is still usable afterwards.
    const tokens = model.tokenize("Hi");
    expect(tokens.length).toBeGreaterThan(0);
    expect(model.detokenize(tokens)).toContain("Hi");
  });
});

describe("the native fuzzers' corpus", () => {
  // tests/fuzz/native/corpus/<target>/ (minimised by npm run fuzz -- --merge) and
  // tests/fuzz/native/regressions/ (inputs that once crashed): each loads, or fails with a
  // LlamaError. They load in a child process, so that a crash names its file instead of taking
  // the test runner down.
  const dirs = ["corpus/fuzz-loader", "corpus/fuzz-gguf", "regressions"].map((d) => path.join(repoRoot, "tests/fuzz/native", d));
  const files = dirs.filter((d) => fs.existsSync(d)).flatMap((d) => fs.readdirSync(d).map((f) => path.join(d, f)));

  it.runIf(files.length > 0)(`each of the ${files.length} corpus files loads or fails with a LlamaError`, { timeout: 300_000 }, async () => {
    const list = path.join(tmp, "corpus-files.json");
    fs.writeFileSync(list, JSON.stringify(files));
    const r = await runScript(
      `import fs from "node:fs";
       import { LlamaError, loadModel } from ${JSON.stringify(srcIndex)};
       for (const file of JSON.parse(fs.readFileSync(${JSON.stringify(list)}, "utf8"))) {
         console.log("START " + file);
         let outcome;
         try {
           const model = await loadModel(file);
           try {
             const context = await model.createContext({ contextSize: 16, threads: 1 });
             const session = context.createSession();
             await session.prompt("Hi");
             await session.generate({ maxTokens: 2, temperature: 0 }).collect();
             outcome = "generated";
           } catch (err) {
             outcome = err instanceof LlamaError ? "loaded/" + err.code : "loaded/NOT_A_LLAMA_ERROR " + err;
           }
           model.dispose();
         } catch (err) {
           outcome = err instanceof LlamaError ? err.code : "NOT_A_LLAMA_ERROR " + err;
         }
         console.log("DONE " + outcome);
       }`,
    );
    const lines = r.stdout.split("\n");
    const started = lines.filter((l) => l.startsWith("START ")).map((l) => l.slice(6));
    const outcomes = lines.filter((l) => l.startsWith("DONE ")).map((l) => l.slice(5));
    const crashed = started.length > outcomes.length ? started[outcomes.length] : undefined;
    expect(crashed, `${crashed} crashed the loader: ${r.signal ?? r.code}\n${r.stderr.slice(-2000)}`).toBeUndefined();
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(outcomes).toHaveLength(files.length);
    const counts: Record<string, number> = {};
    for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
    console.log(`files: fuzz corpus outcomes: ${JSON.stringify(counts)}`);
    for (const o of outcomes) expect(o).not.toContain("NOT_A_LLAMA_ERROR");
  });
});
