/** Shared by tests/train.test.ts and tests/create-model.test.ts. */
import { expect } from "vitest";

import { LlamaError } from "../../src/index.js";
import { readGguf, readTensorFloats } from "../../src/gguf/index.js";
import { mulberry32 } from "./math.js";

/** n random token ids of the 512-token vocabulary (ids ≥ 3: no control tokens). */
export function randomTokens(n: number, seed: number): number[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(rand() * 509));
}

/** The values of one F32 tensor of a GGUF file. */
export async function tensorValues(file: string, name: string): Promise<Float32Array> {
  const gguf = await readGguf(file, { maxArrayLength: 0 });
  const info = gguf.tensors.find((t) => t.name === name);
  if (!info) throw new Error(`no ${name} in ${file}`);
  return readTensorFloats(file, info);
}

/** Expects `promise` to reject with a LlamaError of `code` (and a message matching `message`). */
export async function expectCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LlamaError);
  expect((err as LlamaError).code).toBe(code);
  if (message) expect((err as LlamaError).message).toMatch(message);
}

