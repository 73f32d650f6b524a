/** The unknown-option check shared by every options object (src/options/suggest.ts). */
import { describe, expect, it } from "vitest";

import { LlamaError } from "../src/errors.js";
import { nearestName, rejectUnknownKeys } from "../src/options/suggest.js";

const SAMPLING = ["temperature", "topK", "topP", "minP", "seed", "stop", "maxTokens", "repeatPenalty"] as const;

function thrown(f: () => void): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("nearestName", () => {
  it("finds the nearest known name by edit distance", () => {
    expect(nearestName("temprature", SAMPLING)).toBe("temperature");
    expect(nearestName("maxToken", SAMPLING)).toBe("maxTokens");
    expect(nearestName("topk", SAMPLING)).toBe("topK");
    expect(nearestName("seeed", SAMPLING)).toBe("seed");
  });

  it("ignores case, underscores and dashes", () => {
    expect(nearestName("max_tokens", SAMPLING)).toBe("maxTokens");
    expect(nearestName("repeat-penalty", SAMPLING)).toBe("repeatPenalty");
    expect(nearestName("TOP_P", SAMPLING)).toBe("topP");
  });

  it("gives undefined when nothing is close, or nothing is known", () => {
    expect(nearestName("speculative", SAMPLING)).toBeUndefined();
    expect(nearestName("xyz", SAMPLING)).toBeUndefined();
    expect(nearestName("temperature", [])).toBeUndefined();
  });

  it("prefers the closest, then the first listed on a tie", () => {
    expect(nearestName("topQ", SAMPLING)).toBe("topK"); // topK and topP are both one edit away
    expect(nearestName("minp", ["minP", "min_p"])).toBe("minP");
    expect(nearestName("abcd", ["abce", "abcd"])).toBe("abcd");
  });
});

describe("rejectUnknownKeys", () => {
  it("accepts known keys and an empty object", () => {
    expect(() => rejectUnknownKeys("generate options", {}, SAMPLING)).not.toThrow();
    expect(() => rejectUnknownKeys("generate options", { temperature: 0, seed: 1 }, SAMPLING)).not.toThrow();
  });

  it("refuses an unknown key with ERR_INVALID_ARGUMENT, naming it and the nearest known one", () => {
    const error = thrown(() => rejectUnknownKeys("generate options", { temprature: 0 }, SAMPLING));
    expect(error).toBeInstanceOf(LlamaError);
    expect((error as LlamaError).code).toBe("ERR_INVALID_ARGUMENT");
    expect((error as LlamaError).message).toBe('Unknown option "temprature" in generate options; did you mean "temperature"?');
  });

  it("lists the known names when none is close", () => {
    const error = thrown(() => rejectUnknownKeys("load options", { speculative: {} }, ["gpuLayers", "useMmap"]));
    expect((error as LlamaError).code).toBe("ERR_INVALID_ARGUMENT");
    expect((error as LlamaError).message).toBe('Unknown option "speculative" in load options; the known options are "gpuLayers", "useMmap"');
    expect((thrown(() => rejectUnknownKeys("x options", { a: 1 }, [])) as LlamaError).message).toBe('Unknown option "a" in x options; it takes no options');
  });

  it("refuses an unknown key even when its value is undefined, and ignores inherited keys", () => {
    expect((thrown(() => rejectUnknownKeys("generate options", { temprature: undefined }, SAMPLING)) as LlamaError).code).toBe("ERR_INVALID_ARGUMENT");
    const inherited = Object.create({ temprature: 0 }) as object;
    expect(() => rejectUnknownKeys("generate options", inherited, SAMPLING)).not.toThrow();
  });
});
