/**
 * A reference "gemma3" vision projector in plain TypeScript, computed in float64: an oracle for
 * the image embeddings llama.cpp's libmtmd computes (tools/mtmd: mtmd-image.cpp for the
 * preprocessing, clip.cpp's clip_graph::build_inp / build_vit and models/siglip.cpp for the graph).
 *
 * Preprocessing (mtmd_image_preprocessor_fixed_size with the gemma3 hparams of clip.cpp's
 * load_hparams: RESIZE_ALGO_BILINEAR, PAD_CEIL, pad colour black): an image of exactly
 * image_size² pixels is copied as is; any other is letterboxed: scaled by
 * s = min(S/w, S/h) (float32) to ⌈w·s⌉ × ⌈h·s⌉ (at most S) with img_tool::resize_pillow — Pillow's
 * separable bilinear filter in 22-bit fixed point, horizontal pass then vertical, all integer
 * arithmetic, reproduced exactly here — and pasted at ((S - w')/2, (S - h')/2) on black. Then
 * every channel value becomes (u8 / 255 - mean[c]) / std[c] in float32 (clip_image_f32::from_u8
 * and normalize, with clip.vision.image_mean / image_std).
 *
 * Graph (clip_graph_siglip for PROJECTOR_TYPE_GEMMA3):
 *  - patch embedding: ggml_conv_2d with stride = kernel = patch_size, i.e. one matrix product per
 *    patch over its (channel, row, column) values, + v.patch_embd.bias; patches in row-major
 *    order (index py·nx + px);
 *  - + v.position_embd (one row per patch); no pre-layernorm in Gemma 3;
 *  - n_layer pre-norm blocks: x += out(attn(LayerNorm1(x))), x += down(gelu(up(LayerNorm2(x))));
 *    LayerNorm eps = clip.vision.attention.layer_norm_epsilon; attention is non-causal,
 *    n_head heads, scale 1/√d_head, every projection with its bias; GELU is ggml_gelu (the tanh
 *    approximation, FFN_GELU: clip.use_gelu);
 *  - v.post_ln LayerNorm;
 *  - a 2-D average pool of merge × merge patches (clip.vision.projector.scale_factor) over the
 *    patch grid, tokens in row-major order of the pooled grid;
 *  - ggml_rms_norm with the same eps, × mm.soft_emb_norm.weight (no "1 +": the GGUF stores it);
 *  - × mm.input_projection.weight, stored [textEmbd, nEmbd] and multiplied by its transpose.
 *
 * ggml CPU numerics (`numerics: "ggml-cpu"`, the default), as for the other references:
 *  - GELU goes through ggml's float16 table (GGML_GELU_FP16 in ggml-cpu/vec.h): the input is
 *    rounded to F16 and the table holds F16(gelu_f32(x)), which moves values by ~1e-3;
 *  - clip.cpp enables flash attention when the backend has it (clip_ctx's warmup with
 *    CLIP_FLASH_ATTN_TYPE_AUTO; the CPU backend has it): K and V are cast to F16 before
 *    ggml_flash_attn_ext. With ≥ 64 query rows (GGML_FA_TILE_Q) the CPU kernel is the tiled one,
 *    which reads K and V as F16 but keeps Q, the scores and the accumulators in float32 — what is
 *    modelled here. Fewer patches (under 64) take the one-row kernel, which also rounds Q to F16
 *    and accumulates V·softmax in F16: not modelled (with such a projector expect differences of
 *    the size of those roundings);
 *  - the patch embedding is F16 whatever the kernel's type (but BF16): ggml_conv_2d builds an F16
 *    im2col of the pixels, and ggml_mul_mat(im2col, kernel) converts the kernel to F16 too;
 *  - other matrices stored as F16 multiply F16-rounded activations (vec_dot_type of F16).
 * `numerics: "exact"` drops all of these: plain float64 mathematics.
 *
 * How close this can get: llama.cpp's float32 values sit ~1e-7 (relative) from the float64 ones,
 * so now and then one of them lies on the other side of an F16 rounding boundary (K, V, the GELU
 * input) and moves by an F16 step, ~5e-4 relative. On the fixtures of src/fixtures/mtmd.ts that
 * leaves a median difference of ~2e-5 and a maximum of ~2e-4 on embeddings of size ~3 — and the
 * reference differs from itself by as much when its values are nudged by float32-sized noise
 * (the `noise` option). With `numerics: "exact"` the difference is ~1.5e-3.
 *
 * Weight layout is ggml's: a matrix of shape [nIn, nOut] stores nOut rows of nIn values.
 */

import { GgufError, LlamaError } from "../../src/errors.js";
import { readGguf, type GgufFile } from "../../src/gguf/index.js";
import { gelu, layerNorm } from "./gpt2.js";
import { float32Key, matVec, multiHeadAttention, rmsNorm, tensorReader, toF16, uint32Key, type Matrix } from "./llama.js";

export interface Gemma3VisionHparams {
  /** clip.vision.image_size: the side of the square the image becomes. */
  imageSize: number;
  /** clip.vision.patch_size. */
  patchSize: number;
  /** Patches per side: imageSize / patchSize. */
  patchesPerSide: number;
  nEmbd: number;
  nHead: number;
  nLayer: number;
  nFf: number;
  /** clip.vision.projection_dim: the text model's embedding width. */
  textEmbd: number;
  /** clip.vision.projector.scale_factor (clip.cpp's n_merge; 4 when absent). */
  mergeFactor: number;
  /** Embeddings per image: (patchesPerSide / mergeFactor)². */
  nTokens: number;
  /** LayerNorm and RMSNorm epsilon, exactly as stored (a float32). */
  eps: number;
  /** clip.vision.image_mean and image_std, as float32. */
  mean: [number, number, number];
  std: [number, number, number];
}

export interface Gemma3VisionOptions {
  /** "ggml-cpu" (default): GELU table, F16 K/V in attention, F16 activations for F16 matrices; "exact": none of them. */
  numerics?: "ggml-cpu" | "exact";
  /**
   * A noise model of float32 arithmetic (with "ggml-cpu"): each value about to be rounded to F16
   * (K, V, the GELU table's input) is first multiplied by 1 + noise(). With noise() uniform in
   * ±1e-7 — float32's own error — the reference differs from itself as much as from llama.cpp:
   * the size of the F16 rounding flips that no float64 oracle can predict.
   */
  noise?: () => number;
}

export interface Gemma3VisionResult {
  /** Embeddings: (patchesPerSide / mergeFactor)². */
  tokens: number;
  /** Floats per embedding: textEmbd. */
  width: number;
  /** tokens × width values, embedding by embedding (what llama.cpp reads as input embeddings). */
  embeddings: Float64Array;
}

interface Block {
  ln1: Float32Array;
  ln1Bias: Float32Array;
  q: Matrix;
  qBias: Float32Array;
  k: Matrix;
  kBias: Float32Array;
  v: Matrix;
  vBias: Float32Array;
  o: Matrix;
  oBias: Float32Array;
  ln2: Float32Array;
  ln2Bias: Float32Array;
  up: Matrix;
  upBias: Float32Array;
  down: Matrix;
  downBias: Float32Array;
}

export interface Gemma3VisionWeights {
  /** The conv2d kernel as a matrix: row d holds kernel[d][c][ky][kx] at kx + P·(ky + P·c). */
  patch: Matrix;
  /**
   * The kernel rounded to F16: ggml_conv_2d's im2col is F16 (for any kernel type but BF16), so
   * ggml_mul_mat(im2col, kernel) multiplies F16 pixels by the kernel converted to F16.
   */
  patchF16: Matrix;
  patchBias: Float32Array;
  /** nPatches rows of nEmbd. */
  position: Float32Array;
  blocks: Block[];
  postLn: Float32Array;
  postLnBias: Float32Array;
  softEmbNorm: Float32Array;
  /** mm.input_projection transposed: textEmbd rows of nEmbd. */
  projection: Matrix;
}

export interface Gemma3VisionReference {
  hparams: Gemma3VisionHparams;
  weights: Gemma3VisionWeights;
  /**
   * The normalised input image (channel-planar: R plane, G plane, B plane, each imageSize² values
   * row by row), from 8-bit RGB pixels (3 bytes a pixel, row by row) of any size.
   */
  preprocess(rgb: Uint8Array, width: number, height: number): Float32Array;
  /** The projector's output for 8-bit RGB pixels of any size (preprocess, then the graph). */
  encode(rgb: Uint8Array, width: number, height: number, opts?: Gemma3VisionOptions): Gemma3VisionResult;
  /** The graph alone, on a preprocessed image (as preprocess() returns it). */
  encodePixels(pixels: Float32Array, opts?: Gemma3VisionOptions): Gemma3VisionResult;
}

function stringKey(file: GgufFile, key: string): string | undefined {
  const entry = file.metadata[key];
  return entry?.type === "string" ? entry.value : undefined;
}

function float32Triple(file: GgufFile, key: string): [number, number, number] {
  const entry = file.metadata[key];
  if (entry?.type !== "array" || entry.itemType !== "float32" || entry.value.length < 3) throw new GgufError(`${key} is missing or not 3 float32 values`);
  const v = entry.value as number[];
  return [v[0], v[1], v[2]];
}

function readHparams(file: GgufFile): Gemma3VisionHparams {
  const type = stringKey(file, "clip.projector_type");
  if (type !== "gemma3") throw new LlamaError("ERR_UNSUPPORTED", `Not a gemma3 projector: clip.projector_type ${type}`);
  const gelu = file.metadata["clip.use_gelu"];
  if (gelu?.type !== "bool" || !gelu.value) throw new LlamaError("ERR_UNSUPPORTED", "The reference only has clip.use_gelu (the tanh GELU)");
  const imageSize = uint32Key(file, "clip.vision.image_size");
  const patchSize = uint32Key(file, "clip.vision.patch_size");
  const nEmbd = uint32Key(file, "clip.vision.embedding_length");
  const nHead = uint32Key(file, "clip.vision.attention.head_count");
  const mergeFactor = file.metadata["clip.vision.projector.scale_factor"] === undefined ? 4 : uint32Key(file, "clip.vision.projector.scale_factor");
  const patchesPerSide = imageSize / patchSize;
  if (!Number.isInteger(patchesPerSide) || patchesPerSide % mergeFactor !== 0) {
    throw new GgufError(`image_size ${imageSize} is not a whole number of ${patchSize}-pixel patches merged by ${mergeFactor}`);
  }
  return {
    imageSize,
    patchSize,
    patchesPerSide,
    nEmbd,
    nHead,
    nLayer: uint32Key(file, "clip.vision.block_count"),
    nFf: uint32Key(file, "clip.vision.feed_forward_length"),
    textEmbd: uint32Key(file, "clip.vision.projection_dim"),
    mergeFactor,
    nTokens: (patchesPerSide / mergeFactor) ** 2,
    eps: float32Key(file, "clip.vision.attention.layer_norm_epsilon"),
    mean: float32Triple(file, "clip.vision.image_mean"),
    std: float32Triple(file, "clip.vision.image_std"),
  };
}

/** Loads a "gemma3" projector GGUF (F32 or F16 tensors) into a reference. */
export async function loadGemma3VisionReference(path: string): Promise<Gemma3VisionReference> {
  const file = await readGguf(path, { maxArrayLength: 16 });
  const hp = readHparams(file);
  const { load, matrix, has } = tensorReader(path, file);
  const { nEmbd, nFf, patchSize: P, textEmbd, patchesPerSide } = hp;
  if (has("v.pre_ln.weight")) throw new LlamaError("ERR_UNSUPPORTED", "The reference has no pre-layernorm (Gemma 3 has none)");
  // clip.cpp swaps ffn_up/ffn_down of gemma3 files whose ffn_down rows are nEmbd wide (old
  // exports): with nFf = nEmbd the two readings cannot be told apart, so refuse those.
  if (nFf === nEmbd) throw new LlamaError("ERR_UNSUPPORTED", "The reference needs feed_forward_length ≠ embedding_length");
  const blocks: Block[] = [];
  for (let il = 0; il < hp.nLayer; il++) {
    const b = `v.blk.${il}`;
    blocks.push({
      ln1: await load(`${b}.ln1.weight`, [nEmbd]),
      ln1Bias: await load(`${b}.ln1.bias`, [nEmbd]),
      q: await matrix(`${b}.attn_q.weight`, nEmbd, nEmbd),
      qBias: await load(`${b}.attn_q.bias`, [nEmbd]),
      k: await matrix(`${b}.attn_k.weight`, nEmbd, nEmbd),
      kBias: await load(`${b}.attn_k.bias`, [nEmbd]),
      v: await matrix(`${b}.attn_v.weight`, nEmbd, nEmbd),
      vBias: await load(`${b}.attn_v.bias`, [nEmbd]),
      o: await matrix(`${b}.attn_out.weight`, nEmbd, nEmbd),
      oBias: await load(`${b}.attn_out.bias`, [nEmbd]),
      ln2: await load(`${b}.ln2.weight`, [nEmbd]),
      ln2Bias: await load(`${b}.ln2.bias`, [nEmbd]),
      up: await matrix(`${b}.ffn_up.weight`, nEmbd, nFf),
      upBias: await load(`${b}.ffn_up.bias`, [nFf]),
      down: await matrix(`${b}.ffn_down.weight`, nFf, nEmbd),
      downBias: await load(`${b}.ffn_down.bias`, [nEmbd]),
    });
  }
  const kernel = file.tensors.find((t) => t.name === "v.patch_embd.weight");
  const projInfo = file.tensors.find((t) => t.name === "mm.input_projection.weight");
  const proj = await load("mm.input_projection.weight", [textEmbd, nEmbd]);
  // Transposed: textEmbd rows of nEmbd (ggml_cont(ggml_transpose(w)) keeps the F16 type).
  const projT = new Float32Array(textEmbd * nEmbd);
  for (let d = 0; d < nEmbd; d++) for (let t = 0; t < textEmbd; t++) projT[t * nEmbd + d] = proj[d * textEmbd + t];
  const kernelData = await load("v.patch_embd.weight", [P, P, 3, nEmbd]);
  if (kernel?.typeName === "BF16") throw new LlamaError("ERR_UNSUPPORTED", "The reference does not model a BF16 patch kernel (F32 im2col)");
  const weights: Gemma3VisionWeights = {
    patch: { data: kernelData, cols: 3 * P * P, rows: nEmbd },
    patchF16: { data: kernelData.map(toF16), cols: 3 * P * P, rows: nEmbd, f16: true },
    patchBias: await load("v.patch_embd.bias", [nEmbd]),
    position: await load("v.position_embd.weight", [nEmbd, patchesPerSide * patchesPerSide]),
    blocks,
    postLn: await load("v.post_ln.weight", [nEmbd]),
    postLnBias: await load("v.post_ln.bias", [nEmbd]),
    softEmbNorm: await load("mm.soft_emb_norm.weight", [nEmbd]),
    projection: { data: projT, cols: nEmbd, rows: textEmbd, f16: projInfo?.typeName === "F16" },
  };
  return {
    hparams: hp,
    weights,
    preprocess: (rgb, width, height) => preprocessGemma3(hp, rgb, width, height),
    encode: (rgb, width, height, opts) => encodePixels(hp, weights, preprocessGemma3(hp, rgb, width, height), opts ?? {}),
    encodePixels: (pixels, opts) => encodePixels(hp, weights, pixels, opts ?? {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Preprocessing: mtmd-image.cpp's img_tool::resize (PAD_CEIL) with resize_pillow (bilinear).

/** 8-bit RGB pixels, row by row. */
export interface RgbImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

const PRECISION_BITS = 32 - 8 - 2;

/** resize_pillow's precompute_weights for the bilinear filter: per output pixel, its first input pixel, count and fixed-point weights. */
function pillowWeights(inSize: number, outSize: number): { bounds: Int32Array; weights: Int32Array; ksize: number } {
  const filterSupport = 1.0; // bilinear
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = filterSupport * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const pre = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const filter = (x: number) => {
    const a = Math.abs(x);
    return a < 1 ? 1 - a : 0;
  };
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter((x + xmin - center + 0.5) * ss);
      pre[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0) pre[xx * ksize + x] /= ww;
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  const fxp = 2 ** PRECISION_BITS;
  const weights = new Int32Array(outSize * ksize);
  for (let i = 0; i < weights.length; i++) weights[i] = Math.trunc(pre[i] * fxp + (pre[i] < 0 ? -0.5 : 0.5));
  return { bounds, weights, ksize };
}

const clip8 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

/** One separable pass of resize_pillow along x (`horizontal`) or y, with the rounding bias and an arithmetic shift. */
function pillowPass(src: RgbImage, outSize: number, horizontal: boolean): RgbImage {
  const { bounds, weights, ksize } = pillowWeights(horizontal ? src.width : src.height, outSize);
  const width = horizontal ? outSize : src.width;
  const height = horizontal ? src.height : outSize;
  const rgb = new Uint8Array(width * height * 3);
  const fxp = 2 ** PRECISION_BITS;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = horizontal ? x : y;
      const [min, count] = [bounds[2 * o], bounds[2 * o + 1]];
      for (let c = 0; c < 3; c++) {
        let acc = 1 << (PRECISION_BITS - 1);
        for (let i = 0; i < count; i++) {
          const [sx, sy] = horizontal ? [min + i, y] : [x, min + i];
          acc += src.rgb[3 * (sy * src.width + sx) + c] * weights[o * ksize + i];
        }
        rgb[3 * (y * width + x) + c] = clip8(Math.floor(acc / fxp));
      }
    }
  }
  return { width, height, rgb };
}

/** resize_pillow with the bilinear filter: horizontal pass, then vertical, each only when the size changes. */
export function resizePillowBilinear(src: RgbImage, width: number, height: number): RgbImage {
  let out = src;
  if (width !== src.width) out = pillowPass(out, width, true);
  if (height !== src.height) out = pillowPass(out, height, false);
  return out === src ? { width, height, rgb: src.rgb.slice() } : out;
}

/** img_tool::resize with PAD_CEIL: the same size is a copy; otherwise scale to fit, centred on `pad`. */
export function letterbox(src: RgbImage, width: number, height: number, pad: [number, number, number] = [0, 0, 0]): RgbImage {
  if (src.width === width && src.height === height) return { width, height, rgb: src.rgb.slice() };
  const f = Math.fround;
  const scale = Math.min(f(width / src.width), f(height / src.height));
  const newWidth = Math.min(Math.ceil(f(src.width * scale)), width);
  const newHeight = Math.min(Math.ceil(f(src.height * scale)), height);
  const resized = resizePillowBilinear(src, newWidth, newHeight);
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) rgb.set(pad, 3 * i);
  const [ox, oy] = [Math.trunc((width - newWidth) / 2), Math.trunc((height - newHeight) / 2)];
  for (let y = 0; y < newHeight; y++) {
    rgb.set(resized.rgb.subarray(3 * y * newWidth, 3 * (y + 1) * newWidth), 3 * ((y + oy) * width + ox));
  }
  return { width, height, rgb };
}

/** mtmd_image_preprocessor_fixed_size, from_u8 and normalize, in the channel-planar layout of clip.cpp's inp_raw. */
export function preprocessGemma3(hp: Gemma3VisionHparams, rgb: Uint8Array, width: number, height: number): Float32Array {
  if (rgb.length !== width * height * 3) throw new LlamaError("ERR_INVALID_ARGUMENT", `Expected ${width * height * 3} bytes of RGB, got ${rgb.length}`);
  const S = hp.imageSize;
  const img = letterbox({ width, height, rgb }, S, S);
  const f = Math.fround;
  const out = new Float32Array(3 * S * S);
  for (let i = 0; i < S * S; i++) {
    for (let c = 0; c < 3; c++) out[c * S * S + i] = f(f(f(img.rgb[3 * i + c] / 255) - hp.mean[c]) / hp.std[c]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The graph.

function addBias(y: Float64Array, b: Float32Array): Float64Array {
  for (let i = 0; i < y.length; i++) y[i] += b[i];
  return y;
}

/** ggml_gelu_f32 evaluated in float32 steps, as ggml fills its table. */
function geluF32(x: number): number {
  const f = Math.fround;
  const inner = f(f(f(0.7978845608028654) * x) * f(1 + f(f(f(0.044715) * x) * x)));
  return f(f(f(0.5) * x) * f(1 + f(Math.tanh(inner))));
}

/** GELU as ggml's CPU backend computes it: F16 table over F16-rounded inputs, identity and zero beyond ±10. */
export function geluGgmlCpuF32(x: number): number {
  if (x <= -10) return 0;
  if (x >= 10) return x;
  return toF16(geluF32(toF16(x)));
}

function encodePixels(hp: Gemma3VisionHparams, w: Gemma3VisionWeights, pixels: Float32Array, opts: Gemma3VisionOptions): Gemma3VisionResult {
  const { imageSize: S, patchSize: P, patchesPerSide: n, nEmbd, nHead, eps, mergeFactor: m, textEmbd } = hp;
  if (pixels.length !== 3 * S * S) throw new LlamaError("ERR_INVALID_ARGUMENT", `Expected ${3 * S * S} preprocessed values, got ${pixels.length}`);
  const ggml = (opts.numerics ?? "ggml-cpu") === "ggml-cpu";
  const noise = opts.noise ?? (() => 0);
  const act = ggml ? (x: number) => geluGgmlCpuF32(x * (1 + noise())) : gelu;
  // Flash attention: K and V cast to F16 (ggml_cast before ggml_flash_attn_ext).
  const kv = ggml ? (v: Float64Array) => v.map((x) => toF16(x * (1 + noise()))) : (v: Float64Array) => v;

  // Patch embedding (conv2d, stride = kernel) + bias + position embedding.
  const x: Float64Array[] = [];
  const patch = new Float64Array(3 * P * P);
  for (let py = 0; py < n; py++) {
    for (let px = 0; px < n; px++) {
      for (let c = 0; c < 3; c++) {
        for (let ky = 0; ky < P; ky++) {
          for (let kx = 0; kx < P; kx++) patch[kx + P * (ky + P * c)] = pixels[c * S * S + (py * P + ky) * S + px * P + kx];
        }
      }
      const e = addBias(ggml ? matVec(w.patchF16, patch, true) : matVec(w.patch, patch), w.patchBias);
      const p = py * n + px;
      for (let d = 0; d < nEmbd; d++) e[d] += w.position[p * nEmbd + d];
      x.push(e);
    }
  }

  for (const b of w.blocks) {
    const h = x.map((v) => layerNorm(v, { weight: b.ln1, bias: b.ln1Bias }, eps));
    const q = h.map((v) => addBias(matVec(b.q, v, ggml), b.qBias));
    const k = h.map((v) => kv(addBias(matVec(b.k, v, ggml), b.kBias)));
    const v = h.map((u) => kv(addBias(matVec(b.v, u, ggml), b.vBias)));
    const { out } = multiHeadAttention(q, k, v, nHead, nHead, false);
    x.forEach((r, i) => {
      const o = addBias(matVec(b.o, out[i], ggml), b.oBias);
      for (let d = 0; d < nEmbd; d++) r[d] += o[d];
    });
    for (const r of x) {
      const up = addBias(matVec(b.up, layerNorm(r, { weight: b.ln2, bias: b.ln2Bias }, eps), ggml), b.upBias).map(act);
      const down = addBias(matVec(b.down, up, ggml), b.downBias);
      for (let d = 0; d < nEmbd; d++) r[d] += down[d];
    }
  }
  const post = x.map((v) => layerNorm(v, { weight: w.postLn, bias: w.postLnBias }, eps));

  // Average pool of m × m patches, then RMS norm and the projection.
  const side = n / m;
  const embeddings = new Float64Array(side * side * textEmbd);
  for (let oy = 0; oy < side; oy++) {
    for (let ox = 0; ox < side; ox++) {
      const pooled = new Float64Array(nEmbd);
      for (let dy = 0; dy < m; dy++) {
        for (let dx = 0; dx < m; dx++) {
          const r = post[(oy * m + dy) * n + ox * m + dx];
          for (let d = 0; d < nEmbd; d++) pooled[d] += r[d];
        }
      }
      for (let d = 0; d < nEmbd; d++) pooled[d] /= m * m;
      const e = matVec(w.projection, rmsNorm(pooled, w.softEmbNorm, eps), ggml);
      embeddings.set(e, (oy * side + ox) * textEmbd);
    }
  }
  return { tokens: side * side, width: textEmbd, embeddings };
}

