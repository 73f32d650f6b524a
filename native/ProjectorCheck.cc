// Reading a projector's GGUF header before libmtmd loads it (see ProjectorCheck.h): the values,
// key types and tensor shapes that libmtmd (clip.cpp) aborts the process on instead of
// reporting an error are refused here with ERR_GGUF_INVALID or ERR_UNSUPPORTED.
#include "ProjectorCheck.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

namespace llama_napi {

std::string StringKey(const gguf_context* g, const char* key) {
  const int64_t id = gguf_find_key(g, key);
  if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) return "";
  return gguf_get_val_str(g, id);
}

namespace {

int64_t UintKey(const gguf_context* g, const char* key) {
  const int64_t id = gguf_find_key(g, key);
  if (id < 0) return -1;
  switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
    case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
    default: return -1;
  }
}

bool BoolKey(const gguf_context* g, const char* key) {
  const int64_t id = gguf_find_key(g, key);
  return id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_BOOL && gguf_get_val_bool(g, id);
}

// The keys clip.cpp reads with a typed getter (gguf_get_val_*), which aborts on a value of
// another type (GGML_ASSERT in gguf.cpp): clip-impl.h KEY_*, clip_model_loader::load_hparams.
struct TypedKey {
  const char* key;
  gguf_type type;
};
constexpr TypedKey kTypedKeys[] = {
    {"general.name", GGUF_TYPE_STRING},
    {"general.description", GGUF_TYPE_STRING},
    {"clip.projector_type", GGUF_TYPE_STRING},
    {"clip.vision.projector_type", GGUF_TYPE_STRING},
    {"clip.audio.projector_type", GGUF_TYPE_STRING},
    {"clip.gen.audio.projector_type", GGUF_TYPE_STRING},
    {"clip.gen.audio.model_variant", GGUF_TYPE_STRING},
    {"clip.vision.mm_patch_merge_type", GGUF_TYPE_STRING},
    {"clip.has_vision_encoder", GGUF_TYPE_BOOL},
    {"clip.has_audio_encoder", GGUF_TYPE_BOOL},
    {"clip.has_gen_audio_encoder", GGUF_TYPE_BOOL},
    {"clip.use_gelu", GGUF_TYPE_BOOL},
    {"clip.use_silu", GGUF_TYPE_BOOL},
    {"clip.minicpmv_version", GGUF_TYPE_INT32},
    {"clip.minicpmv_query_num", GGUF_TYPE_UINT32},
    {"clip.vision.image_size", GGUF_TYPE_UINT32},
    {"clip.vision.image_min_pixels", GGUF_TYPE_UINT32},
    {"clip.vision.image_max_pixels", GGUF_TYPE_UINT32},
    {"clip.vision.preproc_min_tiles", GGUF_TYPE_UINT32},
    {"clip.vision.preproc_max_tiles", GGUF_TYPE_UINT32},
    {"clip.vision.preproc_image_size", GGUF_TYPE_UINT32},
    {"clip.vision.patch_size", GGUF_TYPE_UINT32},
    {"clip.vision.projector.scale_factor", GGUF_TYPE_UINT32},
    {"clip.vision.projector.query_side", GGUF_TYPE_UINT32},
    {"clip.vision.projector.window_side", GGUF_TYPE_UINT32},
    {"clip.vision.spatial_merge_size", GGUF_TYPE_UINT32},
    {"clip.vision.n_wa_pattern", GGUF_TYPE_UINT32},
    {"clip.vision.window_size", GGUF_TYPE_UINT32},
    {"clip.vision.sam.head_count", GGUF_TYPE_UINT32},
    {"clip.vision.sam.block_count", GGUF_TYPE_UINT32},
    {"clip.vision.sam.embedding_length", GGUF_TYPE_UINT32},
    {"clip.vision.expert_used_count", GGUF_TYPE_UINT32},
    {"clip.audio.num_mel_bins", GGUF_TYPE_UINT32},
    {"clip.audio.projector.stack_factor", GGUF_TYPE_UINT32},
    {"clip.audio.chunk_size", GGUF_TYPE_UINT32},
    {"clip.audio.conv_kernel_size", GGUF_TYPE_UINT32},
    {"clip.audio.max_pos_emb", GGUF_TYPE_UINT32},
    {"clip.audio.projector.window_size", GGUF_TYPE_UINT32},
    {"clip.audio.projector.downsample_rate", GGUF_TYPE_UINT32},
    {"clip.audio.projector.head_count", GGUF_TYPE_UINT32},
    {"clip.audio.rvq.num_quantizers", GGUF_TYPE_UINT32},
    {"clip.audio.window_size", GGUF_TYPE_UINT32},
    {"clip.audio.local_block_count", GGUF_TYPE_UINT32},
    {"clip.audio.local_group_size", GGUF_TYPE_UINT32},
    {"clip.audio.subsampling_factor", GGUF_TYPE_UINT32},
};
// clip.<vision|audio|gen.audio>.<suffix>: the encoder shape, read for each modality.
constexpr TypedKey kModalityKeys[] = {
    {"embedding_length", GGUF_TYPE_UINT32},     {"feed_forward_length", GGUF_TYPE_UINT32},
    {"block_count", GGUF_TYPE_UINT32},          {"projection_dim", GGUF_TYPE_UINT32},
    {"attention.head_count", GGUF_TYPE_UINT32}, {"attention.head_count_kv", GGUF_TYPE_UINT32},
    {"attention.head_dim", GGUF_TYPE_UINT32},   {"attention.layer_norm_epsilon", GGUF_TYPE_FLOAT32},
};

std::string KeyTypeProblem(const gguf_context* g) {
  auto check = [&](const std::string& key, gguf_type want) -> std::string {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) return "";
    const gguf_type type = gguf_get_kv_type(g, id);
    if (type == want) return "";
    return key + " is stored as " + gguf_type_name(type) + ", but libmtmd reads it as " + gguf_type_name(want) +
           " (and aborts on any other type)";
  };
  for (const TypedKey& k : kTypedKeys) {
    if (std::string p = check(k.key, k.type); !p.empty()) return p;
  }
  for (const char* modality : {"vision", "audio", "gen.audio"}) {
    for (const TypedKey& k : kModalityKeys) {
      if (std::string p = check(std::string("clip.") + modality + "." + k.key, k.type); !p.empty()) return p;
    }
  }
  return "";
}

// A tensor of the header: its type and shape (ne[d] is 1 past its dimensions).
struct TensorShape {
  bool present = false;
  ggml_type type = GGML_TYPE_F32;
  int64_t ne[4] = {1, 1, 1, 1};
};

TensorShape Tensor(const gguf_context* g, const std::string& name) {
  TensorShape t;
  const int64_t id = gguf_find_tensor(g, name.c_str());
  if (id < 0) return t;
  t.present = true;
  t.type = gguf_get_tensor_type(g, id);
  const int64_t* ne = gguf_get_tensor_ne(g, id);
  for (int d = 0; d < 4; d++) t.ne[d] = ne[d];
  return t;
}

std::string ShapeText(const int64_t* ne) {
  int n = 4;
  while (n > 1 && ne[n - 1] == 1) n--;
  std::string s = "[";
  for (int d = 0; d < n; d++) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

// Checks the tensors of one encoder (a gemma3 or ultravox layout) against the shapes its graph
// needs: clip.cpp builds the graph at load (warmup) and GGML_ASSERTs on a shape that does not
// fit (ggml_mul_mat, ggml_add, ggml_reshape, ggml_im2col), or computes it and aborts on a type
// no kernel takes. `expected` gets every name checked, for the stray-tensor check.
class LayoutCheck {
 public:
  LayoutCheck(const gguf_context* g) : g_(g) {}

  // A tensor of exactly this shape (-1: any size in that dimension); `required` or absent.
  // `types`: the types the graph computes it with (empty: any type with a matrix product).
  TensorShape Need(const std::string& name, std::initializer_list<int64_t> shape, bool required,
                   const std::vector<ggml_type>& types = {}) {
    expected.insert(name);
    TensorShape t = Tensor(g_, name);
    if (!problem.empty()) return t;
    if (!t.present) {
      if (required) problem = "it has no tensor " + name + ", which its graph needs";
      return t;
    }
    int64_t want[4] = {1, 1, 1, 1};
    int d = 0;
    for (int64_t n : shape) want[d++] = n;
    for (d = 0; d < 4; d++) {
      if (want[d] >= 0 && t.ne[d] != want[d]) {
        int64_t shown[4];
        for (int k = 0; k < 4; k++) shown[k] = want[k] < 0 ? t.ne[k] : want[k];
        problem = "tensor " + name + " has shape " + ShapeText(t.ne) + " where its graph needs " + ShapeText(shown);
        return t;
      }
    }
    if (types.size() > 0 && std::find(types.begin(), types.end(), t.type) == types.end()) {
      std::string names;
      for (ggml_type ty : types) names += std::string(names.empty() ? "" : " or ") + ggml_type_name(ty);
      problem = "tensor " + name + " is stored as " + ggml_type_name(t.type) + "; libmtmd computes it only as " + names;
    }
    return t;
  }

  // Every tensor whose name starts with one of `prefixes` must be one that was checked (or a
  // block past block_count, which the loader does not read): another one would change the
  // graph (fused QKV, layer scales, a gate, experts, ...) in ways not checked here.
  void NoStrays(std::initializer_list<const char*> prefixes, const char* exclude, const std::string& blockPrefix, int64_t nLayer) {
    if (!problem.empty()) return;
    for (int64_t i = 0; i < gguf_get_n_tensors(g_); i++) {
      const std::string name = gguf_get_tensor_name(g_, i);
      bool ours = false;
      for (const char* p : prefixes) ours = ours || name.rfind(p, 0) == 0;
      if (exclude != nullptr && name.rfind(exclude, 0) == 0) ours = false;
      if (!ours || expected.count(name)) continue;
      if (name.rfind(blockPrefix, 0) == 0) {
        const long long il = std::atoll(name.c_str() + blockPrefix.size());
        if (il >= nLayer) continue;
      }
      problem = "it has a tensor " + name + " that this layout does not use (libmtmd would add it to the graph unchecked)";
      return;
    }
  }

  std::string problem;
  std::set<std::string> expected;

 private:
  const gguf_context* g_;
};

const std::vector<ggml_type> kF32 = {GGML_TYPE_F32};
const std::vector<ggml_type> kConv = {GGML_TYPE_F32, GGML_TYPE_F16};

// The transformer blocks build_vit reads (separate q, k, v; pre-norm; a plain FFN), for
// `prefix` "v" or "a". `swapFfn`: clip.cpp swaps ffn_up and ffn_down when ffn_down's rows are
// n_embd wide (old converters), for some projector types (gemma3 among them).
void CheckBlocks(LayoutCheck& c, const gguf_context* g, const std::string& prefix, int64_t nLayer, int64_t nEmbd, int64_t nHead,
                 int64_t nHeadKv, int64_t dHead, bool whisper, bool swapFfn) {
  for (int64_t il = 0; il < nLayer && c.problem.empty(); il++) {
    const std::string blk = prefix + ".blk." + std::to_string(il) + ".";
    // Whisper's graph asserts that the norms have biases, q and v have biases and k has none.
    c.Need(blk + "ln1.weight", {nEmbd}, whisper, kF32);
    c.Need(blk + "ln1.bias", {nEmbd}, whisper, kF32);
    c.Need(blk + "attn_q.weight", {nEmbd, nHead * dHead}, true);
    c.Need(blk + "attn_q.bias", {nHead * dHead}, whisper, kF32);
    c.Need(blk + "attn_k.weight", {nEmbd, nHeadKv * dHead}, true);
    if (whisper) {
      if (c.problem.empty() && Tensor(g, blk + "attn_k.bias").present) c.problem = "it has a tensor " + blk + "attn_k.bias: Whisper's key projection has no bias (libmtmd asserts so)";
    } else {
      c.Need(blk + "attn_k.bias", {nHeadKv * dHead}, false, kF32);
    }
    c.Need(blk + "attn_v.weight", {nEmbd, nHeadKv * dHead}, true);
    c.Need(blk + "attn_v.bias", {nHeadKv * dHead}, whisper, kF32);
    c.Need(blk + "attn_out.weight", {nHead * dHead, nEmbd}, true);
    c.Need(blk + "attn_out.bias", {nEmbd}, false, kF32);
    c.Need(blk + "ln2.weight", {nEmbd}, whisper, kF32);
    c.Need(blk + "ln2.bias", {nEmbd}, whisper, kF32);
    std::string up = blk + "ffn_up", down = blk + "ffn_down";
    if (swapFfn && Tensor(g, down + ".weight").present && Tensor(g, up + ".weight").present && Tensor(g, down + ".weight").ne[0] == nEmbd) std::swap(up, down);
    const TensorShape u = c.Need(up + ".weight", {nEmbd, -1}, true);
    if (!c.problem.empty()) break;
    const int64_t nFf = u.ne[1];
    c.Need(up + ".bias", {nFf}, false, kF32);
    c.Need(down + ".weight", {nFf, nEmbd}, true);
    c.Need(down + ".bias", {nEmbd}, false, kF32);
  }
}

struct EncoderShape {
  int64_t nEmbd, nHead, nHeadKv, dHead, nLayer;
};

// The encoder shape of modality `m` as clip.cpp's load_hparams reads it; a problem when it
// cannot build a graph with it.
std::string ReadEncoderShape(const gguf_context* g, const std::string& m, EncoderShape& s) {
  const std::string k = "clip." + m + ".";
  s.nEmbd = UintKey(g, (k + "embedding_length").c_str());
  s.nHead = UintKey(g, (k + "attention.head_count").c_str());
  s.nLayer = UintKey(g, (k + "block_count").c_str());
  const int64_t kv = UintKey(g, (k + "attention.head_count_kv").c_str());
  const int64_t dim = UintKey(g, (k + "attention.head_dim").c_str());
  s.nHeadKv = kv < 0 ? s.nHead : kv;
  for (int64_t v : {s.nEmbd, s.nHead, s.nLayer, kv, dim}) {
    if (v > INT32_MAX) s.nEmbd = -1;  // clip.cpp refuses values past INT32_MAX itself
  }
  if (s.nEmbd < 0 || s.nHead < 0 || s.nLayer < 0) {
    s.nEmbd = -1;  // the keys are missing (clip.cpp refuses the file itself): nothing to check
    return "";
  }
  if (s.nEmbd == 0 || s.nHead == 0) return k + (s.nEmbd == 0 ? "embedding_length" : "attention.head_count") + " is 0";
  s.dHead = dim > 0 ? dim : s.nEmbd / s.nHead;
  if (s.nHeadKv <= 0 || s.nHead % s.nHeadKv != 0) {
    return k + "attention.head_count_kv (" + std::to_string(s.nHeadKv) + ") does not divide the head count (" + std::to_string(s.nHead) + ")";
  }
  if (s.dHead <= 0) return k + "embedding_length (" + std::to_string(s.nEmbd) + ") is smaller than the head count (" + std::to_string(s.nHead) + ")";
  return "";
}

// "gemma3": SigLIP (conv2d patches, learned positions, build_vit), a 2-D average pool of side
// n_merge, an RMS norm and mm.input_projection (clip_graph_siglip).
std::string CheckGemma3(const gguf_context* g) {
  EncoderShape s{};
  if (std::string p = ReadEncoderShape(g, "vision", s); !p.empty() || s.nEmbd <= 0) return p;
  const int64_t image = UintKey(g, "clip.vision.image_size");
  const int64_t patch = UintKey(g, "clip.vision.patch_size");
  const int64_t mergeKey = UintKey(g, "clip.vision.projector.scale_factor");
  const int64_t merge = gguf_find_key(g, "clip.vision.projector.scale_factor") >= 0 ? mergeKey : 4;
  if (image < 0 || image > 8192 || patch <= 0 || patch >= 65536 || merge <= 0 || merge >= 65536) return "";  // missing or refused by clip.cpp itself
  if (image < patch) return "clip.vision.image_size (" + std::to_string(image) + ") is smaller than clip.vision.patch_size (" + std::to_string(patch) + ")";
  const int64_t grid = image / patch;
  if (grid % merge != 0) {
    return "the patch grid (clip.vision.image_size / patch_size = " + std::to_string(grid) + ") is not a multiple of clip.vision.projector.scale_factor (" +
           std::to_string(merge) + "): libmtmd counts the pooled tokens differently from its graph and aborts (\"Invalid number of output tokens\")";
  }
  LayoutCheck c(g);
  const int64_t e = s.nEmbd;
  c.Need("v.patch_embd.weight", {patch, patch, 3, e}, true, kConv);
  c.Need("v.patch_embd.bias", {e}, false, kF32);
  // Added to the [n_embd, patches] input: ggml broadcasts a table whose rows divide the patches.
  const TensorShape pos = c.Need("v.position_embd.weight", {e, -1}, false, kF32);
  if (c.problem.empty() && pos.present && (grid * grid) % pos.ne[1] != 0) {
    return "tensor v.position_embd.weight has " + std::to_string(pos.ne[1]) + " positions, which do not divide the " + std::to_string(grid * grid) +
           " patches of an image (clip.vision.image_size / patch_size, squared)";
  }
  c.Need("v.pre_ln.weight", {e}, false, kF32);
  c.Need("v.pre_ln.bias", {e}, false, kF32);
  CheckBlocks(c, g, "v", s.nLayer, e, s.nHead, s.nHeadKv, s.dHead, false, true);
  c.Need("v.post_ln.weight", {e}, false, kF32);
  c.Need("v.post_ln.bias", {e}, false, kF32);
  c.Need("mm.soft_emb_norm.weight", {e}, true, kF32);
  c.Need("mm.input_projection.weight", {-1, e}, true, {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16});
  c.NoStrays({"v.", "mm."}, "mm.a.", "v.blk.", s.nLayer);
  return c.problem;
}

// A Whisper encoder (two 1-D convolutions over log-mel frames, the second of stride 2, learned
// positions, build_vit over 1500 positions, clip_graph_whisper_enc) and, after frame stacking,
// the projector head of `type`: "ultravox" (RMS norm, SwiGLU MLP, RMS norm, projection) or
// "voxtral" (average pool by 2 before the stacking; GELU MLP).
std::string CheckWhisper(const gguf_context* g, const std::string& type) {
  EncoderShape s{};
  if (std::string p = ReadEncoderShape(g, "audio", s); !p.empty() || s.nEmbd <= 0) return p;
  const int64_t mel = UintKey(g, "clip.audio.num_mel_bins");
  const int64_t stack = UintKey(g, "clip.audio.projector.stack_factor");
  if (mel <= 0 || mel > 256 || stack <= 0 || stack > INT32_MAX) return "";  // refused by clip.cpp itself (or by the stack checks)
  if (s.nLayer == 0) return "clip.audio.block_count is 0; Whisper's graph reads the first block";
  const int64_t e = s.nEmbd;
  LayoutCheck c(g);
  const TensorShape conv1 = c.Need("a.conv1d.1.weight", {-1, mel, e}, true, kConv);
  const TensorShape conv2 = c.Need("a.conv1d.2.weight", {-1, e, e}, true, kConv);
  if (c.problem.empty() && (conv1.ne[0] % 2 == 0 || conv2.ne[0] % 2 == 0)) {
    return "its convolution kernels are " + std::to_string(conv1.ne[0]) + " and " + std::to_string(conv2.ne[0]) +
           " wide: Whisper's graph needs odd widths (3), to keep 3000 mel frames as 1500 positions";
  }
  c.Need("a.conv1d.1.bias", {1, e}, true, kF32);
  c.Need("a.conv1d.2.bias", {1, e}, true, kF32);
  const TensorShape pos = c.Need("a.position_embd.weight", {e, -1}, true, kF32);
  if (c.problem.empty() && pos.ne[1] < 1500) return "tensor a.position_embd.weight has " + std::to_string(pos.ne[1]) + " positions; a 30 s window needs 1500";
  c.Need("a.pre_ln.weight", {e}, false, kF32);
  c.Need("a.pre_ln.bias", {e}, false, kF32);
  CheckBlocks(c, g, "a", s.nLayer, e, s.nHead, s.nHeadKv, s.dHead, true, false);
  c.Need("a.post_ln.weight", {e}, false, kF32);
  c.Need("a.post_ln.bias", {e}, false, kF32);
  const int64_t stacked = e * stack;
  if (type == "ultravox") {
    c.Need("mm.a.norm_pre.weight", {stacked}, true, kF32);
    const TensorShape mlp1 = c.Need("mm.a.mlp.1.weight", {stacked, -1}, true);
    if (c.problem.empty() && mlp1.ne[1] % 2 != 0) return "tensor mm.a.mlp.1.weight has " + std::to_string(mlp1.ne[1]) + " outputs; its SwiGLU needs an even number";
    const int64_t hidden = mlp1.ne[1] / 2;
    c.Need("mm.a.norm_mid.weight", {hidden}, true, kF32);
    c.Need("mm.a.mlp.2.weight", {hidden, -1}, true);
  } else {
    const TensorShape mlp1 = c.Need("mm.a.mlp.1.weight", {stacked, -1}, true);
    c.Need("mm.a.mlp.2.weight", {mlp1.ne[1], -1}, true);
  }
  c.NoStrays({"a.", "mm.a."}, nullptr, "a.blk.", s.nLayer);
  return c.problem;
}

// Projector types whose tensors libmtmd's loader treats as optional but whose graph (or output
// width) uses unconditionally: a file of another layout relabeled as one of them loads, then
// dereferences a missing tensor or reads past one. Only what such a file lacks is checked.
std::string CheckOtherLayout(const gguf_context* g, const std::string& type) {
  LayoutCheck c(g);
  if (type == "mlp") {
    // LLaVA: mm.0 and mm.2 (the output width is mm.2's, clip_n_mmproj_embd); Yi-style files
    // (with mm.3) use mm.0, mm.1 (a norm) and mm.3 instead.
    c.Need("mm.0.weight", {-1, -1}, true);
    c.Need("mm.0.bias", {-1}, true, kF32);
    if (Tensor(g, "mm.3.weight").present) {
      c.Need("mm.1.weight", {-1}, true, kF32);
      c.Need("mm.1.bias", {-1}, true, kF32);
      c.Need("mm.3.bias", {-1}, true, kF32);
    } else {
      c.Need("mm.2.weight", {-1, -1}, true);
    }
  } else if (type == "gemma3nv") {
    c.Need("v.conv_stem.conv.weight", {-1, -1, -1, -1}, true);  // MobileNetV5's stem
  } else if (type == "gemma4v") {
    // Two position tables (x and y), [n_embd, positions, 2].
    const int64_t e = UintKey(g, "clip.vision.embedding_length");
    const TensorShape pos = c.Need("v.position_embd.weight", {e < 0 ? -1 : e, -1, -1}, true);
    if (c.problem.empty() && pos.ne[2] < 2) return "tensor v.position_embd.weight has shape " + ShapeText(pos.ne) + "; gemma4v reads two position tables from it ([n_embd, positions, 2])";
  }
  return c.problem;
}

// What libmtmd would abort on (GGML_ASSERT / GGML_ABORT) instead of reporting, for a projector
// it loads: keys of another type than its getters read, norm epsilons its kernels assert on,
// tensors no kernel computes with in their role, and (for the "gemma3" and "ultravox" layouts)
// tensor shapes that do not fit the graph clip.cpp builds at load.
}  // namespace

Failure CheckProjectorHeader(const gguf_context* g, const std::string& path) {
  const auto invalid = [&](const std::string& why) {
    return Failure{"ERR_GGUF_INVALID", "The projector " + path + " cannot be loaded: " + why + ". The file is damaged or was written by a faulty tool."};
  };
  if (std::string p = KeyTypeProblem(g); !p.empty()) return invalid(p);
  const bool vision = BoolKey(g, "clip.has_vision_encoder");
  const bool audio = BoolKey(g, "clip.has_audio_encoder");
  if (!vision && !audio && !BoolKey(g, "clip.has_gen_audio_encoder") && StringKey(g, "clip.projector_type").empty()) {
    return {"ERR_GGUF_INVALID", path + " is not a multimodal projector (no clip.* keys): pass the mmproj GGUF that goes with the model"};
  }
  for (const char* m : {"vision", "audio", "gen.audio"}) {
    const std::string key = std::string("clip.") + m + ".attention.layer_norm_epsilon";
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) continue;
    const float eps = gguf_get_val_f32(g, id);
    if (!(eps >= 0.0f) || !std::isfinite(eps)) return invalid(key + " is " + std::to_string(eps) + "; ggml's norms need a finite epsilon >= 0");
  }
  // Norm weights, biases and other vectors are added or multiplied into f32 activations, for
  // which ggml's CPU kernels take f32 operands only (binary_op aborts on "unsupported types").
  for (int64_t i = 0; i < gguf_get_n_tensors(g); i++) {
    const int64_t* ne = gguf_get_tensor_ne(g, i);
    const int big = (ne[0] > 1) + (ne[1] > 1) + (ne[2] > 1) + (ne[3] > 1);
    const ggml_type type = gguf_get_tensor_type(g, i);
    if (big <= 1 && type != GGML_TYPE_F32) {
      return invalid(std::string("tensor ") + gguf_get_tensor_name(g, i) + " (a vector) is stored as " + ggml_type_name(type) +
                     "; libmtmd adds and multiplies vectors as f32 only");
    }
  }
  // Whisper-style audio encoders (Ultravox, Voxtral, Qwen2-Audio, ...) stack frames of a 30 s
  // window (1500 frames after the convolutions); this llama.cpp pads the stack in the graph but
  // counts the output tokens without the padding, and aborts when they differ.
  const int64_t stack = UintKey(g, "clip.audio.projector.stack_factor");
  if (stack > 0 && 1500 % stack != 0) {
    return {"ERR_UNSUPPORTED", "The audio projector in " + path + " stacks " + std::to_string(stack) +
                                   " frames, which does not divide a 30 s window (1500 frames): this llama.cpp's "
                                   "libmtmd aborts on it (\"Invalid number of output tokens\")"};
  }
  const auto typeOf = [&](const char* m) {
    std::string t = StringKey(g, "clip.projector_type");
    return t.empty() ? StringKey(g, (std::string("clip.") + m + ".projector_type").c_str()) : t;
  };
  if (audio) {
    const std::string t = typeOf("audio");
    if ((t == "ultravox" || t == "voxtral" || t == "meralion") && stack == 0) {
      return invalid("clip.audio.projector.stack_factor is 0; a projector of type " + t + " stacks at least one frame (libmtmd asserts so)");
    }
    if (t == "voxtral" && stack > 0 && 750 % stack != 0) {
      // Voxtral pools the encoder's 1500 positions to 750 before the stacking, which pads them;
      // the token count divides 3000 frames by the stack, then by 4, rounding down.
      return {"ERR_UNSUPPORTED", "The voxtral audio projector in " + path + " stacks " + std::to_string(stack) +
                                     " frames, which does not divide the 750 pooled frames of a 30 s window: this llama.cpp's "
                                     "libmtmd aborts on it (\"Invalid number of output tokens\")"};
    }
    if (t == "ultravox" || t == "voxtral") {
      if (std::string p = CheckWhisper(g, t); !p.empty()) return invalid("as an audio projector of type " + t + ", " + p);
    }
  }
  if (vision) {
    const std::string t = typeOf("vision");
    if (t == "gemma3") {
      if (std::string p = CheckGemma3(g); !p.empty()) return invalid("as a vision projector of type gemma3, " + p);
    } else if (std::string p = CheckOtherLayout(g, t); !p.empty()) {
      return invalid("as a vision projector of type " + t + ", " + p);
    }
  }
  return {};
}

}  // namespace llama_napi
