/**
 * Small GPT-2 models for tests that load many files or need unusual shapes: a vocabulary of the
 * first `nTokens` GPT-2 tokens (the 256 byte tokens and the first merges) plus <|endoftext|>,
 * instead of the 50,257-token vocabulary that makes every fixture at least 1.7 MB.
 */
import { writeRandomGpt2, DEFAULT_GPT2_VOCAB_PATH, type Gpt2Options } from "../../src/fixtures/gpt2.js";
import { ggufValue, readGguf, writeGguf, type GgufMetadata } from "../../src/gguf/index.js";

/** Writes a GGUF holding only a GPT-2 tokenizer cut to `nTokens` tokens (at least 256) + EOS. */
export async function writeSmallGpt2Vocab(file: string, nTokens = 300): Promise<void> {
  const full = await readGguf(DEFAULT_GPT2_VOCAB_PATH);
  const all = full.metadata["tokenizer.ggml.tokens"].value as string[];
  const merges = full.metadata["tokenizer.ggml.merges"].value as string[];
  const tokens = all.slice(0, nTokens);
  const known = new Set(tokens);
  // A merge is kept when both halves and their concatenation are tokens of the small vocabulary.
  const kept = merges.filter((m) => {
    const [a, b] = m.split(" ");
    return known.has(a) && known.has(b) && known.has(a + b);
  });
  const eos = tokens.length;
  const metadata: GgufMetadata = {
    "general.architecture": ggufValue.string("gpt2"),
    "tokenizer.ggml.model": ggufValue.string("gpt2"),
    "tokenizer.ggml.pre": ggufValue.string("gpt-2"),
    "tokenizer.ggml.tokens": ggufValue.array("string", [...tokens, "<|endoftext|>"]),
    "tokenizer.ggml.token_type": ggufValue.array("int32", [...tokens.map(() => 1), 3]),
    "tokenizer.ggml.merges": ggufValue.array("string", kept),
    "tokenizer.ggml.bos_token_id": ggufValue.uint32(eos),
    "tokenizer.ggml.eos_token_id": ggufValue.uint32(eos),
  };
  await writeGguf(file, { metadata, tensors: [] });
}

/** A GPT-2 with random weights and the small vocabulary of {@link writeSmallGpt2Vocab}. */
export async function writeSmallGpt2(file: string, vocabFile: string, options: Omit<Gpt2Options, "vocabPath">): Promise<void> {
  await writeRandomGpt2(file, { ...options, vocabPath: vocabFile });
}
