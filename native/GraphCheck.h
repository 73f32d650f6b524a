// What ggml cannot compute, found before the first decode instead of at it. A model whose tensor
// types the loader accepts can still hold a type that the op using it has no kernel for (an F16
// norm weight or bias in ggml's CPU ADD/MUL, an I32 matrix in MUL_MAT, an I64 embedding table in
// GET_ROWS): ggml then aborts the whole process in the middle of a decode. These checks build the
// graphs a context will run, and check each node, with the real types of its sources, against
// the backend the scheduler put it on: ggml's own supports_op for other backends, and for the CPU
// the constraints of ggml-cpu's kernels (ops.cpp, binary-ops.cpp, unary-ops.cpp, ggml-cpu.c at
// the pinned commit), which its supports_op does not express.
#pragma once

#include <ggml.h>

#include <string>

struct llama_context;
struct llama_model;

namespace llama_napi {

// ggml-cpu's type traits (ggml-cpu.c type_traits_cpu) at the pinned commit, as the kernels use
// them. A copy, because in a prebuilt binary ggml-cpu is a module loaded at run time whose C
// functions the addon does not link; the fuzz target, which links ggml-cpu, compares the two.
struct CpuTypeTraits {
  bool vecDot = false;                  // has a dot product: can be a MUL_MAT matrix
  ggml_type vecDotType = GGML_TYPE_F32;  // the type the other operand is converted to
  bool fromFloat = false;               // can be written from floats (CPY, SET_ROWS destinations)
};
CpuTypeTraits CpuTraits(ggml_type type);

// "" when every node of the graphs `ctx` runs (a full batch of its micro-batch size and one
// token per sequence) can be computed where it is scheduled; otherwise which tensor cannot and
// why. Runs on the thread that owns `ctx`, never during a decode; leaves the scheduler reset,
// as llama.cpp leaves it between decodes. `reserve`: first rebuild the scheduler as the next
// decode would (llama_context::sched_reserve), for a context whose graph changed (LoRA adapters).
std::string UncomputableNode(llama_context* ctx, bool reserve = false);

// "" when a context of `model` (an embedding context when `embeddings`) can run as llama-napi
// runs it (llama_decode, or llama_encode for an encoder-only model's embeddings; one model);
// otherwise why not: encoder-decoder models (T5), whose decoder aborts the process unless
// llama_encode ran first; encoder-only models in a generation context; and the draft models
// llama.cpp runs only beside another model.
std::string UnsupportedArchitecture(const llama_model* model, bool embeddings);

// "" when llama.cpp's graph builder for the model's architecture can build its graph; otherwise
// what it would abort on: head sizes (key, value, RoPE dimensions) that it asserts equal
// (native/ArchAsserts.inc), a T5 without the first layer's relative position bias. For a model
// loaded with its weights (a vocabulary-only load reads no hyperparameters).
std::string GraphBuilderProblem(const llama_model* model);

// "" when llama.cpp's token operations can run on the model's vocabulary; otherwise why not: no
// vocabulary at all ("none"), or a BOS/EOS/SEP token that tokenization adds and that is missing.
std::string UnusableVocabulary(const llama_model* model);

}  // namespace llama_napi
