#include "GraphCheck.h"

#include <ggml-backend.h>
#include <llama.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

// llama.cpp's context class (src/llama-context.h), for the two things the C API does not give:
// the scheduler that assigns each node to a backend, and the context's batch sizes.
#include "../vendor/llama.cpp/src/llama-context.h"
// The model's resolved hyperparameters (llama_model::hparams), for the head sizes.
#include "../vendor/llama.cpp/src/llama-model.h"

namespace llama_napi {
namespace {

// llama_context::graph_params (private), for the encoder graph that no reserve builds: reached
// through the explicit instantiation of a template with a pointer to it, which the language
// allows for private members.
struct GraphParamsOf {
  using type = llm_graph_params (llama_context::*)(llm_graph_result*, const llama_ubatch&, const llama_memory_context_i*,
                                                   llm_graph_type) const;
  friend type Get(GraphParamsOf);
};
template <typename Tag, typename Tag::type Member>
struct Expose {
  friend typename Tag::type Get(Tag) { return Member; }
};
template struct Expose<GraphParamsOf, &llama_context::graph_params>;

// A node ggml cannot compute: which source is at fault (-1: the node itself) and what the
// kernel needs instead.
struct Problem {
  int src = -1;
  std::string need;
};

using Check = std::optional<Problem>;

const char* TypeName(ggml_type t) { return ggml_type_name(t); }

bool OneOf(ggml_type t, std::initializer_list<ggml_type> types) {
  for (ggml_type u : types) {
    if (t == u) return true;
  }
  return false;
}

Check Need(int src, std::string need) { return Problem{src, std::move(need)}; }

// binary-ops.cpp binary_op: the (src0, src1, dst) type triples it has kernels for.
Check BinaryTypes(const ggml_tensor* n) {
  const ggml_type a = n->src[0]->type, b = n->src[1]->type, d = n->type;
  const bool ok = (a == GGML_TYPE_F32 && b == GGML_TYPE_F32 && d == GGML_TYPE_F32) ||
                  (a == GGML_TYPE_F16 && b == GGML_TYPE_F16 && d == GGML_TYPE_F16) ||
                  (a == GGML_TYPE_BF16 && b == GGML_TYPE_BF16 && d == GGML_TYPE_BF16) ||
                  (a == GGML_TYPE_BF16 && b == GGML_TYPE_F32 && (d == GGML_TYPE_BF16 || d == GGML_TYPE_F32)) ||
                  (a == GGML_TYPE_F16 && b == GGML_TYPE_F32 && (d == GGML_TYPE_F16 || d == GGML_TYPE_F32));
  if (ok) return std::nullopt;
  // Blame the source that differs from the result's type (the weight, in a model's graph).
  const int culprit = (b != d && b != GGML_TYPE_F32) || a == d ? 1 : 0;
  return Need(culprit, std::string("it has kernels for f32, f16 and bf16 operands only, and a second operand of the "
                                   "first one's type or f32; here ") +
                           TypeName(a) + " and " + TypeName(b) + " into " + TypeName(d));
}

// ggml-cpu.c ggml_compute_forward_mul_mat (and _id): the matrix's type needs a dot product, and
// the other operand is converted to its vec_dot_type from f32 (or f16 when that type is f32).
Check MatMulTypes(const ggml_tensor* n) {
  const ggml_tensor* w = n->src[0];
  const ggml_tensor* x = n->src[1];
  const CpuTypeTraits traits = CpuTraits(w->type);
  if (!traits.vecDot) {
    return Need(0, std::string("ggml's CPU backend has no dot product for ") + TypeName(w->type) +
                       " matrices (a matrix must be f32, f16, bf16 or a quantised type)");
  }
  if (x->type != traits.vecDotType) {
    const bool fromF32 = x->type == GGML_TYPE_F32 && CpuTraits(traits.vecDotType).fromFloat;
    const bool fromF16 = x->type == GGML_TYPE_F16 && traits.vecDotType == GGML_TYPE_F32;
    if (!fromF32 && !fromF16) {
      return Need(1, std::string("the operand multiplied by a ") + TypeName(w->type) + " matrix must be f32 or " +
                         TypeName(traits.vecDotType) + "; here " + TypeName(x->type));
    }
  }
  if (n->op == GGML_OP_MUL_MAT_ID && n->src[2]->type != GGML_TYPE_I32) return Need(2, "expert ids must be i32");
  return std::nullopt;
}

// ops.cpp ggml_compute_forward_dup (CPY, DUP, CONT): the conversions it implements.
Check CopyTypes(const ggml_tensor* n) {
  const ggml_type from = n->src[0]->type, to = n->type;
  if (from == to) return std::nullopt;
  const bool fromFloat = OneOf(from, {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16});
  const bool ok = (fromFloat && (OneOf(to, {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16}) ||
                                 (ggml_is_quantized(to) && CpuTraits(to).fromFloat))) ||
                  (from == GGML_TYPE_F32 && to == GGML_TYPE_I32) || (from == GGML_TYPE_I32 && to == GGML_TYPE_F32) ||
                  (ggml_is_quantized(from) && to == GGML_TYPE_F32 && ggml_get_type_traits(from)->to_float != nullptr);
  if (ok) return std::nullopt;
  return Need(0, std::string("it cannot convert ") + TypeName(from) + " to " + TypeName(to));
}

// ops.cpp ggml_compute_forward_get_rows: the row types it can read (into f32).
Check GetRowsTypes(const ggml_tensor* n) {
  const ggml_type t = n->src[0]->type;
  const bool ok = OneOf(t, {GGML_TYPE_F32, GGML_TYPE_I32, GGML_TYPE_F16, GGML_TYPE_BF16}) ||
                  (ggml_is_quantized(t) && t != GGML_TYPE_Q8_K && ggml_get_type_traits(t)->to_float != nullptr);
  if (!ok) return Need(0, std::string("it reads rows of f32, f16, bf16, i32 or quantised tables only; here ") + TypeName(t));
  if (n->src[1]->type != GGML_TYPE_I32) return Need(1, "row ids must be i32");
  return std::nullopt;
}

// The ops whose CPU kernels read every operand as 32-bit floats (after dispatching on the first
// one's type, if at all): a source of another width would be read out of its bounds.
bool F32Kernel(ggml_op op) {
  switch (op) {
    case GGML_OP_SCALE: case GGML_OP_SUM_ROWS: case GGML_OP_MEAN: case GGML_OP_ARGSORT: case GGML_OP_TOP_K:
    case GGML_OP_CUMSUM: case GGML_OP_SSM_CONV: case GGML_OP_SSM_SCAN: case GGML_OP_RWKV_WKV6: case GGML_OP_RWKV_WKV7:
    case GGML_OP_GATED_LINEAR_ATTN: case GGML_OP_GATED_DELTA_NET: case GGML_OP_PAD: case GGML_OP_ROLL:
    case GGML_OP_UPSCALE: case GGML_OP_DIAG_MASK_INF: case GGML_OP_DIAG_MASK_ZERO: case GGML_OP_SOLVE_TRI:
    case GGML_OP_GROUP_NORM: case GGML_OP_ARGMAX: case GGML_OP_ADD_REL_POS:
      return true;
    default:
      return false;
  }
}

// The eps of NORM / RMS_NORM / L2_NORM (op_params[0]): ops.cpp asserts eps >= 0.
Check NormEps(const ggml_tensor* n) {
  float eps = 0;
  std::memcpy(&eps, n->op_params, sizeof(float));
  if (eps >= 0.0f) return std::nullopt;
  return Need(-1, "its epsilon is " + std::to_string(eps) + " (from the model's layer_norm epsilon); it must be >= 0");
}

Check F32(const ggml_tensor* n, int i, const char* what) {
  const ggml_tensor* s = n->src[i];
  if (s == nullptr || s->type == GGML_TYPE_F32) return std::nullopt;
  return Need(i, std::string(what) + " must be f32; here " + TypeName(s->type));
}

// ggml-cpu's constraints for node `n` on the CPU backend.
Check CpuProblem(const ggml_tensor* n) {
  const ggml_tensor* const* s = n->src;
  switch (n->op) {
    case GGML_OP_NONE: case GGML_OP_VIEW: case GGML_OP_RESHAPE: case GGML_OP_PERMUTE: case GGML_OP_TRANSPOSE:
      return std::nullopt;
    case GGML_OP_DUP: case GGML_OP_CPY: case GGML_OP_CONT:
      return CopyTypes(n);
    case GGML_OP_GET_ROWS:
      return GetRowsTypes(n);
    case GGML_OP_SET_ROWS:
      if (!OneOf(s[0]->type, {GGML_TYPE_F32, GGML_TYPE_F16})) return Need(0, "rows written must be f32 or f16");
      if (!OneOf(s[1]->type, {GGML_TYPE_I32, GGML_TYPE_I64})) return Need(1, "row ids must be i32 or i64");
      if (!CpuTraits(n->type).fromFloat && !(s[0]->type == GGML_TYPE_F16 && n->type == GGML_TYPE_F16)) {
        return Need(-1, std::string("it cannot write rows into a ") + TypeName(n->type) + " table");
      }
      return std::nullopt;
    case GGML_OP_ADD:
      if (OneOf(s[0]->type, {GGML_TYPE_MXFP4, GGML_TYPE_NVFP4})) {
        if (s[1]->type != GGML_TYPE_F32) return Need(1, "the operand added to a quantised tensor must be f32");
        if (!ggml_are_same_shape(s[0], s[1]) || !CpuTraits(n->type).fromFloat) return Need(0, "quantised additions need equal shapes");
        return std::nullopt;
      }
      return BinaryTypes(n);
    case GGML_OP_SUB: case GGML_OP_MUL: case GGML_OP_DIV:
      return BinaryTypes(n);
    case GGML_OP_ADD_ID:
      if (auto p = F32(n, 0, "the first operand")) return p;
      if (auto p = F32(n, 1, "the added rows")) return p;
      if (s[2]->type != GGML_TYPE_I32) return Need(2, "row ids must be i32");
      return std::nullopt;
    case GGML_OP_MUL_MAT: case GGML_OP_MUL_MAT_ID:
      return MatMulTypes(n);
    case GGML_OP_NORM: case GGML_OP_RMS_NORM: case GGML_OP_L2_NORM:
      if (auto p = F32(n, 0, "the normalised tensor")) return p;
      return NormEps(n);
    case GGML_OP_ROPE:
      if (!OneOf(s[0]->type, {GGML_TYPE_F32, GGML_TYPE_F16})) return Need(0, "the rotated tensor must be f32 or f16");
      if (s[1]->type != GGML_TYPE_I32) return Need(1, "positions must be i32");
      return F32(n, 2, "RoPE frequency factors");
    case GGML_OP_SOFT_MAX:
      if (auto p = F32(n, 0, "the input")) return p;
      if (s[1] != nullptr && !OneOf(s[1]->type, {GGML_TYPE_F32, GGML_TYPE_F16})) return Need(1, "the mask must be f32 or f16");
      return F32(n, 2, "attention sinks");
    case GGML_OP_FLASH_ATTN_EXT: {
      if (auto p = F32(n, 0, "queries")) return p;
      const CpuTypeTraits k = CpuTraits(s[1]->type);
      if (!k.vecDot || !CpuTraits(k.vecDotType).fromFloat) return Need(1, std::string("keys cannot be ") + TypeName(s[1]->type));
      if (s[2]->type != GGML_TYPE_F32 && ggml_get_type_traits(s[2]->type)->to_float == nullptr) {
        return Need(2, std::string("values cannot be ") + TypeName(s[2]->type));
      }
      if (s[3] != nullptr && s[3]->type != GGML_TYPE_F16) return Need(3, "the mask must be f16");
      return F32(n, 4, "attention sinks");
    }
    case GGML_OP_UNARY:
      if ((s[0]->type == GGML_TYPE_F32 && n->type == GGML_TYPE_F32) || (s[0]->type == GGML_TYPE_F16 && n->type == GGML_TYPE_F16)) {
        return std::nullopt;
      }
      return Need(0, std::string("activations take f32 or f16 only; here ") + TypeName(s[0]->type));
    case GGML_OP_GLU: {
      const bool f16Ok = ggml_get_glu_op(n) != GGML_GLU_OP_SWIGLU_OAI;
      if (!(s[0]->type == GGML_TYPE_F32 || (f16Ok && s[0]->type == GGML_TYPE_F16))) return Need(0, "gated activations take f32 or f16 only");
      if (s[1] != nullptr && s[1]->type != s[0]->type) return Need(1, "both halves of a gated activation must have one type");
      return std::nullopt;
    }
    case GGML_OP_CLAMP:
      if (!OneOf(s[0]->type, {GGML_TYPE_F32, GGML_TYPE_F16})) return Need(0, "clamp takes f32 or f16 only");
      return std::nullopt;
    case GGML_OP_REPEAT:
      if (!OneOf(s[0]->type, {GGML_TYPE_F32, GGML_TYPE_I32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_I16})) {
        return Need(0, std::string("it cannot repeat ") + TypeName(s[0]->type));
      }
      return std::nullopt;
    case GGML_OP_IM2COL:
      if (!OneOf(s[0]->type, {GGML_TYPE_F32, GGML_TYPE_F16})) return Need(0, "convolution kernels must be f32 or f16");
      if (!(s[1]->type == GGML_TYPE_F32 || (s[1]->type == GGML_TYPE_F16 && n->type == GGML_TYPE_F16))) return Need(1, "the convolved input must be f32");
      return std::nullopt;
    case GGML_OP_CONV_TRANSPOSE_1D:
      if (!OneOf(s[0]->type, {GGML_TYPE_F32, GGML_TYPE_F16})) return Need(0, "convolution kernels must be f32 or f16");
      return F32(n, 1, "the convolved input");
    default:
      break;
  }
  if (F32Kernel(n->op)) {
    if (auto p = F32(n, 0, "its input")) return p;
    for (int i = 1; i < GGML_MAX_SRC; i++) {
      if (s[i] != nullptr && ggml_type_size(s[i]->type) != 4) {
        return Need(i, std::string("every operand must be f32 (or i32 ids); here ") + TypeName(s[i]->type));
      }
    }
  }
  return std::nullopt;  // an op without a rule here: ggml's supports_op has said yes
}

// The tensor a source stands for: a view's (or reshape's) underlying tensor, which in a model's
// graph is the weight as the file names it.
const ggml_tensor* Origin(const ggml_tensor* t) {
  while (t->view_src != nullptr) t = t->view_src;
  while ((t->op == GGML_OP_RESHAPE || t->op == GGML_OP_PERMUTE || t->op == GGML_OP_TRANSPOSE || t->op == GGML_OP_VIEW) &&
         t->src[0] != nullptr) {
    t = t->src[0];
    while (t->view_src != nullptr) t = t->view_src;
  }
  return t;
}

// A tensor of the model or of an adapter (or the KV cache): allocated before the graph, named.
// The graph's inputs and intermediate results have no buffer until the scheduler allocates them.
bool IsStored(const ggml_tensor* t) { return t->op == GGML_OP_NONE && t->buffer != nullptr && t->name[0] != '\0'; }

std::string Describe(const ggml_tensor* n, const Problem& p, const char* backend) {
  const std::string op = n->op == GGML_OP_UNARY ? ggml_unary_op_name(ggml_get_unary_op(n))
                         : n->op == GGML_OP_GLU ? ggml_glu_op_name(ggml_get_glu_op(n))
                                                : ggml_op_name(n->op);
  if (p.src >= 0) {
    const ggml_tensor* origin = Origin(n->src[p.src]);
    if (IsStored(origin)) {
      return std::string("tensor ") + origin->name + " is stored as " + TypeName(origin->type) + ", which ggml's " + backend +
             " backend cannot use where the model's graph uses it (in " + op + ": " + p.need + ")";
    }
  }
  std::string sources;
  for (int i = 0; i < GGML_MAX_SRC && n->src[i] != nullptr; i++) sources += (i ? ", " : "") + std::string(TypeName(n->src[i]->type));
  return std::string("ggml's ") + backend + " backend cannot compute the graph's " + op + " node " + n->name + " (operands " +
         sources + "): " + p.need;
}

// The CPU device's extra buffer types (repacked weights, AMX ...): ops on them go through their
// own kernels, which their supports_op describes.
bool InExtraBuffer(const ggml_tensor* n, ggml_backend_dev_t cpu) {
  using GetExtra = ggml_backend_buffer_type_t* (*)(ggml_backend_dev_t);
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
  auto getExtra = reinterpret_cast<GetExtra>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
  if (getExtra == nullptr) return false;
  for (int i = 0; i < 4 && n->src[i] != nullptr; i++) {
    const ggml_tensor* src = n->src[i]->view_src != nullptr ? n->src[i]->view_src : n->src[i];
    if (src->buffer == nullptr) continue;
    ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(src->buffer);
    for (ggml_backend_buffer_type_t* extra = getExtra(cpu); extra != nullptr && *extra != nullptr; extra++) {
      if (*extra == buft) return true;
    }
  }
  return false;
}

std::string CheckGraph(ggml_backend_sched_t sched, ggml_cgraph* gf) {
  for (int i = 0; i < ggml_graph_n_nodes(gf); i++) {
    ggml_tensor* node = ggml_graph_node(gf, i);
    ggml_backend_t backend = ggml_backend_sched_get_tensor_backend(sched, node);
    ggml_backend_dev_t dev = backend != nullptr ? ggml_backend_get_device(backend) : nullptr;
    const bool cpu = dev == nullptr || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
    Check problem;
    if (!cpu || InExtraBuffer(node, dev)) {
      if (!ggml_backend_dev_supports_op(dev, node)) problem = Problem{-1, "the backend does not support it"};
    } else {
      problem = CpuProblem(node);
    }
    if (problem) return Describe(node, *problem, backend != nullptr ? ggml_backend_name(backend) : "CPU");
  }
  return "";
}

// The head-size equalities each architecture's graph builder asserts (generated from the
// vendored llama.cpp by scripts/gen-arch-asserts.mjs).
enum : unsigned {
  kHead_k_EQ_K = 0, kHead_v_EQ_V = 0,  // n_embd_head equal to itself: no constraint
  kHead_v_EQ_K = 1u << 0, kHead_v_EQ_ROT = 1u << 1, kHead_k_EQ_V = 1u << 2, kHead_k_EQ_ROT = 1u << 3,
  kHead_embd_EQ_K = 1u << 4, kHead_embd_EQ_V = 1u << 5, kHead_embd_EQ_ROT = 1u << 6,
};
struct ArchAssert {
  const char* arch;
  unsigned flags;
};
const ArchAssert kArchAsserts[] = {
#include "ArchAsserts.inc"
};

}  // namespace

std::string GraphBuilderProblem(const llama_model* model) {
  char name[64] = "";
  llama_model_meta_val_str(model, "general.architecture", name, sizeof(name));
  // src/models/t5.cpp, t5encoder.cpp: a layer without its own relative position bias (an optional
  // tensor) uses layer 0's, which is then dereferenced whether it exists or not (SIGSEGV; a find
  // of the structure-aware fuzzer).
  const bool t5 = std::strcmp(name, "t5") == 0, t5encoder = std::strcmp(name, "t5encoder") == 0;
  if ((t5 || t5encoder) && !model->layers.empty()) {
    if (model->layers[0].attn_rel_b_enc == nullptr) {
      return std::string("architecture ") + name + " needs the relative position bias of the first encoder layer "
             "(enc.blk.0.attn_rel_b.weight), which llama.cpp uses for every layer without its own, and the file has none";
    }
    if (t5 && model->layers[0].attn_rel_b == nullptr) {
      return "architecture t5 needs the relative position bias of the first decoder layer (dec.blk.0.attn_rel_b.weight), "
             "which llama.cpp uses for every layer without its own, and the file has none";
    }
  }
  unsigned flags = 0;
  for (const ArchAssert& a : kArchAsserts) {
    if (std::strcmp(a.arch, name) == 0) flags = a.flags;
  }
  if (flags == 0) return "";
  const llama_hparams& hp = model->hparams;
  const struct Size {
    const char* what;
    int64_t value;
  } k{"key head size (attention.key_length)", hp.n_embd_head_k()}, v{"value head size (attention.value_length)", hp.n_embd_head_v()},
      rot{"RoPE dimension count (rope.dimension_count)", hp.n_rot()},
      embd{"head size embedding_length / head_count", hp.n_head() > 0 ? static_cast<int64_t>(hp.n_embd / hp.n_head()) : 0};
  const std::pair<unsigned, std::pair<Size, Size>> rules[] = {
      {kHead_v_EQ_K, {v, k}}, {kHead_v_EQ_ROT, {v, rot}}, {kHead_k_EQ_V, {k, v}}, {kHead_k_EQ_ROT, {k, rot}},
      {kHead_embd_EQ_K, {embd, k}}, {kHead_embd_EQ_V, {embd, v}}, {kHead_embd_EQ_ROT, {embd, rot}},
  };
  for (const auto& [flag, pair] : rules) {
    const auto& [a, b] = pair;
    if ((flags & flag) != 0 && a.value != b.value) {
      return std::string("architecture ") + name + " needs the " + a.what + " (" + std::to_string(a.value) +
             ") to equal the " + b.what + " (" + std::to_string(b.value) + "), and would abort the process when a context is created";
    }
  }
  return "";
}

std::string UnusableVocabulary(const llama_model* model) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const enum llama_vocab_type type = llama_vocab_type(vocab);
  if (type == LLAMA_VOCAB_TYPE_NONE) {
    return "it has no vocabulary (tokenizer.ggml.model \"none\"): it takes embeddings as input, and llama-napi runs models "
           "from text and tokens; llama.cpp aborts on every token operation of such a model";
  }
  // llama-vocab.cpp tokenize with add_special (llama-napi's default): GGML_ASSERT that the BOS,
  // EOS or SEP token it adds exists (an id missing or out of range is no token). A find of the
  // structure-aware fuzzer (a T5 vocabulary retyped "bert").
  const bool wpm = type == LLAMA_VOCAB_TYPE_WPM;
  const bool spmLike = type == LLAMA_VOCAB_TYPE_SPM || type == LLAMA_VOCAB_TYPE_BPE || type == LLAMA_VOCAB_TYPE_UGM;
  const char* missing = (wpm || (spmLike && llama_vocab_get_add_bos(vocab))) && llama_vocab_bos(vocab) == LLAMA_TOKEN_NULL ? "BOS (tokenizer.ggml.bos_token_id)"
                        : spmLike && llama_vocab_get_add_eos(vocab) && llama_vocab_eos(vocab) == LLAMA_TOKEN_NULL ? "EOS (tokenizer.ggml.eos_token_id)"
                        : wpm && llama_vocab_sep(vocab) == LLAMA_TOKEN_NULL ? "SEP (tokenizer.ggml.seperator_token_id)"
                                                                            : nullptr;
  if (missing == nullptr) return "";
  return std::string("its vocabulary adds a ") + missing + " token to every text it tokenizes, and has no such token (the id is "
         "missing or out of range); llama.cpp would abort on the first tokenization";
}

CpuTypeTraits CpuTraits(ggml_type type) {
  switch (type) {
    case GGML_TYPE_F32: return {true, GGML_TYPE_F32, true};
    case GGML_TYPE_F16: return {true, GGML_TYPE_F16, true};
    case GGML_TYPE_BF16: return {true, GGML_TYPE_BF16, true};
    case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0:
    case GGML_TYPE_MXFP4: case GGML_TYPE_NVFP4: case GGML_TYPE_IQ4_NL:
      return {true, GGML_TYPE_Q8_0, true};
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: return {true, GGML_TYPE_Q8_1, true};
    case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
    case GGML_TYPE_IQ4_XS: case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0:
      return {true, GGML_TYPE_Q8_K, true};
    // No from_float: these need an importance matrix to quantise.
    case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S: case GGML_TYPE_IQ2_S:
    case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M:
      return {true, GGML_TYPE_Q8_K, false};
    // Only the other operand of a dot product: no vec_dot of their own.
    case GGML_TYPE_Q8_1: return {false, GGML_TYPE_Q8_1, true};
    case GGML_TYPE_Q8_K: return {false, GGML_TYPE_F32, true};
    case GGML_TYPE_I32: return {false, GGML_TYPE_F32, true};
    default: return {};  // I8, I16, I64, F64: nothing
  }
}

std::string UncomputableNode(llama_context* ctx, bool reserve) {
  if (reserve) {
    try {
      ctx->sched_reserve();
    } catch (const std::exception& e) {
      return std::string("llama.cpp could not prepare the graph: ") + e.what();
    }
  }
  ggml_backend_sched_t sched = ctx->get_sched();
  const llama_cparams& cp = ctx->get_cparams();
  const uint32_t nSeqs = cp.n_seq_max;
  const uint32_t nTokens = std::min(cp.n_ctx, cp.n_ubatch);
  // The two graphs llama.cpp reserves (llama_context::sched_reserve): a full micro-batch, and one
  // token per sequence. Each is built and split over the backends (split_only: the split is what
  // assigns each node its backend; the compute buffers llama.cpp reserved stay as they are).
  const uint32_t shapes[2][3] = {{nTokens, nSeqs, std::min(nTokens, std::max(cp.n_outputs_max, 1u))}, {nSeqs, nSeqs, nSeqs}};
  std::string problem;
  try {
    llama_memory_context_ptr mctx;
    if (llama_memory_t memory = ctx->get_memory()) {
      mctx = memory->init_full();
      if (!mctx) return "llama.cpp could not prepare the context's memory";
    }
    for (const auto& shape : shapes) {
      ggml_cgraph* gf = ctx->graph_reserve(shape[0], shape[1], shape[2], mctx.get(), /*split_only=*/true);
      if (gf == nullptr) return "llama.cpp could not build the model's graph";
      problem = CheckGraph(sched, gf);
      ggml_backend_sched_reset(sched);
      if (!problem.empty()) break;
    }
    const llama_model& model = ctx->get_model();
    if (problem.empty() && llama_model_has_encoder(&model) && llama_model_has_decoder(&model)) {
      // An encoder-decoder model's encoder graph (llama_encode): one sequence of a full
      // micro-batch, every row an output, as llama_context::encode builds it.
      llama_batch_allocr balloc(model.hparams.n_pos_per_embd());
      llama_ubatch ubatch = balloc.ubatch_reserve(nTokens, 1);
      for (uint32_t i = 0; i < nTokens; i++) {
        ubatch.n_seq_id[i] = 1;
        ubatch.seq_id[i] = &ubatch.seq_id_unq[0];
        ubatch.output[i] = true;
      }
      llm_graph_result* res = ctx->get_gf_res_reserve();
      res->reset();
      llm_graph_params params = (ctx->*Get(GraphParamsOf{}))(res, ubatch, nullptr, LLM_GRAPH_TYPE_ENCODER);
      params.n_outputs = nTokens;
      ggml_cgraph* gf = model.build_graph(params);
      ggml_backend_sched_reset(sched);
      ggml_backend_sched_split_graph(sched, gf);
      problem = CheckGraph(sched, gf);
      ggml_backend_sched_reset(sched);
      if (!problem.empty()) problem = "in its encoder: " + problem;
    }
  } catch (const std::exception& e) {
    ggml_backend_sched_reset(sched);
    problem = std::string("llama.cpp could not build the model's graph: ") + e.what();
  }
  return problem;
}

std::string UnsupportedArchitecture(const llama_model* model, bool embeddings) {
  char arch[64] = "";
  llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch));
  const std::string name = arch;
  if (name == "eagle3" || name == "dflash" || name == "gemma4-assistant") {
    return "a model of architecture " + name + " is a draft model for speculative decoding, which llama.cpp runs only "
           "beside the model it drafts for; llama-napi does not support that, so it cannot run on its own";
  }
  if (llama_model_has_encoder(model) && llama_model_has_decoder(model) && embeddings) {
    return "the model's architecture " + name + " is an encoder-decoder model (like T5): it generates text from a "
           "context (model.createContext()); for embeddings of its encoder, convert the encoder alone (architecture "
           "t5encoder)";
  }
  if (!llama_model_has_decoder(model) && !embeddings) {
    return "the model's architecture " + name + " is an encoder without a decoder: it computes embeddings "
           "(model.createEmbeddingContext()), not the next-token logits a generation context needs";
  }
  return "";
}

}  // namespace llama_napi
