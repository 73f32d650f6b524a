#include "GgufCheck.h"

#include <llama.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "GraphCheck.h"
#include "log.h"

namespace llama_napi {
namespace {

// LLAMA_MAX_LAYERS / LLAMA_MAX_EXPERTS (src/llama-hparams.h) at the pinned commit.
constexpr double kMaxLayers = 512;
constexpr double kMaxExperts = 1024;

// Keys whose values are the vocabulary itself (kept out of model.metadata).
bool IsVocabularyKey(std::string_view key) {
  return key == "tokenizer.ggml.tokens" || key == "tokenizer.ggml.scores" || key == "tokenizer.ggml.token_type" ||
         key == "tokenizer.ggml.merges" || key == "tokenizer.ggml.precompiled_charsmap";
}

// A numeric scalar as double; nullopt when missing or not numeric.
std::optional<double> Number(const gguf_context* g, const std::string& key) {
  const int64_t id = gguf_find_key(g, key.c_str());
  if (id < 0) return std::nullopt;
  switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_UINT8: return gguf_get_val_u8(g, id);
    case GGUF_TYPE_INT8: return gguf_get_val_i8(g, id);
    case GGUF_TYPE_UINT16: return gguf_get_val_u16(g, id);
    case GGUF_TYPE_INT16: return gguf_get_val_i16(g, id);
    case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
    case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
    case GGUF_TYPE_UINT64: return static_cast<double>(gguf_get_val_u64(g, id));
    case GGUF_TYPE_INT64: return static_cast<double>(gguf_get_val_i64(g, id));
    case GGUF_TYPE_FLOAT32: return gguf_get_val_f32(g, id);
    case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(g, id);
    default: return std::nullopt;
  }
}

double ArrayItem(const void* data, gguf_type type, size_t i) {
  switch (type) {
    case GGUF_TYPE_UINT8: return static_cast<const uint8_t*>(data)[i];
    case GGUF_TYPE_INT8: return static_cast<const int8_t*>(data)[i];
    case GGUF_TYPE_UINT16: return static_cast<const uint16_t*>(data)[i];
    case GGUF_TYPE_INT16: return static_cast<const int16_t*>(data)[i];
    case GGUF_TYPE_UINT32: return static_cast<const uint32_t*>(data)[i];
    case GGUF_TYPE_INT32: return static_cast<const int32_t*>(data)[i];
    case GGUF_TYPE_UINT64: return static_cast<double>(static_cast<const uint64_t*>(data)[i]);
    case GGUF_TYPE_INT64: return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    case GGUF_TYPE_FLOAT32: return static_cast<const float*>(data)[i];
    case GGUF_TYPE_FLOAT64: return static_cast<const double*>(data)[i];
    case GGUF_TYPE_BOOL: return static_cast<const int8_t*>(data)[i];
    default: return 0;
  }
}

// The largest value of a numeric scalar or array (llama.cpp's get_key_or_arr reads either).
std::optional<double> MaxOf(const gguf_context* g, const std::string& key) {
  const int64_t id = gguf_find_key(g, key.c_str());
  if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY) return Number(g, key);
  const gguf_type type = gguf_get_arr_type(g, id);
  if (type == GGUF_TYPE_STRING || type == GGUF_TYPE_ARRAY) return std::nullopt;
  const size_t n = gguf_get_arr_n(g, id);
  if (n == 0) return std::nullopt;
  const void* data = gguf_get_arr_data(g, id);
  double max = ArrayItem(data, type, 0);
  for (size_t i = 1; i < n; i++) max = std::max(max, ArrayItem(data, type, i));
  return max;
}

// llama-vocab.cpp: GGML_ASSERT(id_to_token.size() == token_to_id.size()): no two equal tokens
// (an empty token is renamed "[EMPTY_<i>]" before it is indexed).
std::string DuplicateToken(const gguf_context* g) {
  const int64_t id = gguf_find_key(g, "tokenizer.ggml.tokens");
  if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_STRING) return "";
  const size_t n = gguf_get_arr_n(g, id);
  // Views of the strings gguf holds (no copies: this runs on every load). An empty token can only
  // clash with a token that is literally "[EMPTY_<i>]", which is rare: those are made up apart.
  std::unordered_map<std::string_view, size_t> seen;
  std::deque<std::string> renamed;  // a deque: growing it never moves the strings viewed above
  seen.reserve(n);
  for (size_t i = 0; i < n; i++) {
    std::string_view text = gguf_get_arr_str(g, id, i);
    if (text.empty()) text = renamed.emplace_back("[EMPTY_" + std::to_string(i) + "]");
    auto [it, inserted] = seen.emplace(text, i);
    if (!inserted) {
      return "tokens " + std::to_string(it->second) + " and " + std::to_string(i) +
             " of tokenizer.ggml.tokens are the same string; every token must be unique";
    }
  }
  return "";
}

// llama-vocab.cpp token_to_byte: GGML_ABORT for a WordPiece ("bert") vocabulary, which has no
// byte tokens; while the vocabulary loads, token_to_piece calls it for every token typed BYTE (6).
// Found by the loader fuzzer.
std::string WordPieceByteToken(const gguf_context* g) {
  const int64_t model = gguf_find_key(g, "tokenizer.ggml.model");
  if (model < 0 || gguf_get_kv_type(g, model) != GGUF_TYPE_STRING || std::strcmp(gguf_get_val_str(g, model), "bert") != 0) {
    return "";
  }
  const int64_t tokens = gguf_find_key(g, "tokenizer.ggml.tokens");
  const int64_t types = gguf_find_key(g, "tokenizer.ggml.token_type");
  if (tokens < 0 || types < 0 || gguf_get_kv_type(g, types) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, types) != GGUF_TYPE_INT32) {
    return "";
  }
  // llama.cpp reads the types of the first n_tokens tokens only.
  const size_t n = std::min(gguf_get_arr_n(g, tokens), gguf_get_arr_n(g, types));
  const auto* type = static_cast<const int32_t*>(gguf_get_arr_data(g, types));
  for (size_t i = 0; i < n; i++) {
    if (type[i] == LLAMA_TOKEN_TYPE_BYTE) {
      return "token " + std::to_string(i) + " is typed as a byte token (tokenizer.ggml.token_type 6), which a WordPiece "
             "(\"bert\") vocabulary cannot have";
    }
  }
  return "";
}

// llama-vocab.cpp llm_tokenizer_rwkv_session::tokenize: it walks the token trie from each
// position and, when no prefix on the way is a token, goes back to the start of the text, forever
// (the output grows without bound). A prefix of one byte always matches when every byte that
// starts a token is itself a token, as in RWKV's own vocabularies. Found by the structure-aware
// fuzzer (an SPM vocabulary retyped "rwkv").
std::string RwkvTokenizerLoops(const gguf_context* g) {
  const int64_t model = gguf_find_key(g, "tokenizer.ggml.model");
  if (model < 0 || gguf_get_kv_type(g, model) != GGUF_TYPE_STRING || std::strcmp(gguf_get_val_str(g, model), "rwkv") != 0) {
    return "";
  }
  const int64_t tokens = gguf_find_key(g, "tokenizer.ggml.tokens");
  if (tokens < 0 || gguf_get_kv_type(g, tokens) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, tokens) != GGUF_TYPE_STRING) return "";
  // llama_unescape_rwkv_token, exactly (a trailing backslash or a cut \\xN adds nothing).
  auto unescape = [](std::string_view text) {
    std::string out;
    bool escaping = false;
    int hexRemaining = 0;
    uint8_t hex = 0;
    for (const char c : text) {
      if (hexRemaining > 0) {
        hex = static_cast<uint8_t>((hex << 4) + ((c >= 'a') ? (c - 'a' + 10) : (c - '0')));
        if (--hexRemaining == 0) out += static_cast<char>(hex), hex = 0;
      } else if (escaping) {
        if (c == 'x') hexRemaining = 2;
        else out += c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
        escaping = false;
      } else if (c == '\\') {
        escaping = true;
      } else {
        out += c;
      }
    }
    return out;
  };
  bool single[256] = {};
  bool starts[256] = {};
  const size_t n = gguf_get_arr_n(g, tokens);
  for (size_t i = 0; i < n; i++) {
    const std::string text = unescape(gguf_get_arr_str(g, tokens, i));
    if (text.empty()) continue;
    starts[static_cast<uint8_t>(text[0])] = true;
    if (text.size() == 1) single[static_cast<uint8_t>(text[0])] = true;
  }
  for (int b = 0; b < 256; b++) {
    if (starts[b] && !single[b]) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", b);
      return std::string("the RWKV vocabulary has tokens that start with byte ") + hex +
             " but no token of that byte alone, on which llama.cpp's RWKV tokenizer loops forever";
    }
  }
  return "";
}

// llama-model.cpp load_hparams: the asserts on layer and expert counts and the RoPE scaling type.
std::string BadHyperparameters(const gguf_context* g) {
  const int64_t archId = gguf_find_key(g, "general.architecture");
  if (archId < 0) return "";
  if (gguf_get_kv_type(g, archId) != GGUF_TYPE_STRING) {
    // llama-model-loader.cpp throws on it before it takes ownership of ggml's metadata context,
    // which then leaks (found by the loader fuzzer under LeakSanitizer).
    return std::string("general.architecture is a ") + gguf_type_name(gguf_get_kv_type(g, archId)) +
           ", not a string: it must name the model's architecture (such as \"gpt2\" or \"llama\")";
  }
  const std::string arch = gguf_get_val_str(g, archId);
  auto key = [&](const char* name) { return arch + "." + name; };
  // llama-model-loader.cpp print_info: general.file_type is loaded into enum llama_ftype, which
  // holds 0..2047 (LLAMA_FTYPE_GUESSED is 1024); a larger value is undefined behaviour there.
  const std::optional<double> fileType = Number(g, "general.file_type");
  if (fileType && !(*fileType >= 0 && *fileType <= LLAMA_FTYPE_GUESSED)) {
    return "general.file_type is " + std::to_string(static_cast<int64_t>(*fileType)) + ", not a llama.cpp file type (0 to 1024)";
  }
  const std::optional<double> layers = Number(g, key("block_count"));
  if (layers && !(*layers > 0 && *layers <= kMaxLayers)) {
    return key("block_count") + " is " + std::to_string(*layers) + "; llama.cpp needs 1 to 512 layers";
  }
  const std::optional<double> nextn = Number(g, key("nextn_predict_layers"));
  if (layers && nextn && *nextn > *layers) return key("nextn_predict_layers") + " is larger than " + key("block_count");
  const double experts = Number(g, key("expert_count")).value_or(0);
  const double used = MaxOf(g, key("expert_used_count")).value_or(0);
  const double groups = Number(g, key("expert_group_count")).value_or(0);
  const double groupsUsed = Number(g, key("expert_group_used_count")).value_or(0);
  const char* problem = experts > kMaxExperts                        ? "more than 1024 experts"
                        : used > experts                             ? "more experts used than there are"
                        : experts > 0 && used <= 0                   ? "experts but none used"
                        : experts > 0 && groups >= experts           ? "at least as many expert groups as experts"
                        : experts > 0 && groups > 1 && (std::fmod(experts, groups) != 0 || groupsUsed <= 0 || groupsUsed >= groups)
                            ? "an inconsistent expert grouping"
                        : experts == 0 && groups != 0 ? "expert groups but no experts"
                                                      : nullptr;
  if (problem != nullptr) return std::string("the expert counts describe ") + problem;
  // Enums read from numbers: llama-graph.cpp aborts on a pooling type or an expert gating
  // function it does not know (GGML_ABORT while it builds the graph: at createContext). Found by
  // the structure-aware fuzzer (pooling).
  std::optional<double> pooling = Number(g, key("pooling_type"));
  // llama_model_save_to_file writes LLAMA_POOLING_TYPE_UNSPECIFIED (-1) as a uint32; llama.cpp
  // reads it back as -1, what a file without the key gives.
  if (pooling && *pooling == 4294967295.0) pooling = -1;
  if (pooling && !(*pooling >= -1 && *pooling <= LLAMA_POOLING_TYPE_RANK)) {
    return key("pooling_type") + " is " + std::to_string(static_cast<int64_t>(*pooling)) + ", not a pooling type (0 to 4)";
  }
  const std::optional<double> gating = Number(g, key("expert_gating_func"));
  if (gating && !(*gating >= 0 && *gating <= 4)) {
    return key("expert_gating_func") + " is " + std::to_string(static_cast<int64_t>(*gating)) + ", not an expert gating function (0 to 4)";
  }
  // ggml-cpu's NORM, RMS_NORM and GROUP_NORM assert eps >= 0 at the first decode.
  for (const char* eps : {"attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon", "attention.group_norm_epsilon"}) {
    const std::optional<double> value = Number(g, key(eps));
    if (value && !(*value >= 0)) return key(eps) + " is " + std::to_string(*value) + "; a normalisation epsilon must be >= 0";
  }
  const int64_t rope = gguf_find_key(g, key("rope.scaling.type").c_str());
  if (rope >= 0 && gguf_get_kv_type(g, rope) == GGUF_TYPE_STRING) {
    const std::string type = gguf_get_val_str(g, rope);
    if (type != "none" && type != "linear" && type != "yarn" && type != "longrope") {
      return key("rope.scaling.type") + " is \"" + type + "\"; llama.cpp knows none, linear, yarn, longrope";
    }
  }
  return "";
}

// A pass over the header before ggml's reader sees it. ggml stores each raw 32-bit type field
// (value types, array element types, tensor types) in an enum before it range-checks it, and
// when a file ends right before a value type it compares the enum's initial -1: both undefined
// behaviour for values the enum cannot hold (UBSan stops the process there; found by
// tests/fuzz/native). Those files are refused here first: out-of-range types, and metadata or
// tensor entries that run past the end of the file (ggml fails on those too). Anything else
// malformed is left to ggml's reader, which reports it.
class TypeScan {
 public:
  explicit TypeScan(FILE* f) : f_(f) {
    if (std::fseek(f, 0, SEEK_END) == 0) {
      const long size = std::ftell(f);
      remain_ = size > 0 ? static_cast<uint64_t>(size) : 0;
    }
    std::fseek(f, 0, SEEK_SET);
  }

  // The first problem, as a message; "" when there is none (or the scan leaves the file to ggml).
  std::string Problem() {
    char magic[4];
    uint32_t version = 0;
    int64_t nTensors = 0, nKv = 0;
    if (!Read(magic, 4) || std::memcmp(magic, "GGUF", 4) != 0 || !Get(version) || version < 2 || version > 3) return "";
    if (!Get(nTensors) || !Get(nKv) || nTensors < 0 || nKv < 0) return "";
    for (int64_t i = 0; i < nKv; i++) {
      uint64_t keyLength = 0;
      int32_t type = 0;
      if (!Get(keyLength) || !Skip(keyLength) || !Get(type)) return PastEnd("metadata value", i);
      if (type < 0 || type >= GGUF_TYPE_COUNT) return "metadata value " + std::to_string(i) + " has type " + std::to_string(type) + ", not a GGUF type";
      if (type == GGUF_TYPE_ARRAY) {
        int32_t item = 0;
        uint64_t n = 0;
        if (!Get(item)) return PastEnd("metadata value", i);
        if (item < 0 || item >= GGUF_TYPE_COUNT) {
          return "metadata array " + std::to_string(i) + " has items of type " + std::to_string(item) + ", not a GGUF type";
        }
        if (item == GGUF_TYPE_ARRAY) return "";  // ggml refuses nested arrays itself
        if (!Get(n)) return PastEnd("metadata value", i);
        if (item == GGUF_TYPE_STRING) {
          for (uint64_t k = 0; k < n; k++) {
            uint64_t length = 0;
            if (!Get(length) || !Skip(length)) return PastEnd("metadata value", i);
          }
        } else if (n > remain_ / Width(item) || !Skip(n * Width(item))) {
          return PastEnd("metadata value", i);
        }
      } else if (type == GGUF_TYPE_STRING) {
        uint64_t length = 0;
        if (!Get(length) || !Skip(length)) return PastEnd("metadata value", i);
      } else if (!Skip(Width(type))) {
        return PastEnd("metadata value", i);
      }
    }
    for (int64_t t = 0; t < nTensors; t++) {
      uint64_t nameLength = 0, offset = 0;
      uint32_t dims = 0;
      int32_t type = 0;
      if (!Get(nameLength) || !Skip(nameLength) || !Get(dims)) return PastEnd("tensor", t);
      if (dims > GGML_MAX_DIMS) return "";  // ggml refuses it itself
      // ggml multiplies the dimensions before it checks that their product fits in int64 (signed
      // overflow, found by the loader fuzz under UBSan).
      int64_t elements = 1;
      bool overflow = false;
      for (uint32_t d = 0; d < dims; d++) {
        int64_t ne = 0;
        if (!Get(ne)) return PastEnd("tensor", t);
        if (ne < 0) return "";  // ggml refuses it itself
        overflow = overflow || __builtin_mul_overflow(elements, ne, &elements);
      }
      if (overflow) return "tensor " + std::to_string(t) + " has more elements than a 64-bit count can hold";
      if (!Get(type)) return PastEnd("tensor", t);
      if (type < 0 || type >= GGML_TYPE_COUNT) return "tensor " + std::to_string(t) + " has type " + std::to_string(type) + ", not a ggml type";
      if (!Get(offset)) return PastEnd("tensor", t);
    }
    return "";
  }

 private:
  static std::string PastEnd(const char* what, int64_t i) {
    return std::string(what) + " " + std::to_string(i) + " runs past the end of the file (it is truncated)";
  }
  static uint64_t Width(int32_t type) {
    switch (type) {
      case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
      case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
      case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
      default: return 4;  // the 32-bit types
    }
  }
  bool Read(void* dst, size_t n) {
    if (n > remain_ || std::fread(dst, 1, n, f_) != n) return false;
    remain_ -= n;
    return true;
  }
  template <typename T>
  bool Get(T& v) {
    return Read(&v, sizeof(T));
  }
  bool Skip(uint64_t n) {
    if (n > remain_) return false;
    if (n <= sizeof(scratch_)) return Read(scratch_, static_cast<size_t>(n));  // buffered, no syscall
    if (std::fseek(f_, static_cast<long>(n), SEEK_CUR) != 0) return false;
    remain_ -= n;
    return true;
  }

  FILE* f_;
  uint64_t remain_ = 0;
  char scratch_[4096];
};

Napi::Value Scalar(Napi::Env env, const gguf_context* g, int64_t id, gguf_type type) {
  switch (type) {
    case GGUF_TYPE_STRING: return Napi::String::New(env, gguf_get_val_str(g, id));
    case GGUF_TYPE_BOOL: return Napi::Boolean::New(env, gguf_get_val_bool(g, id));
    case GGUF_TYPE_UINT64: {
      const uint64_t v = gguf_get_val_u64(g, id);
      return v <= (1ULL << 53) ? Napi::Value(Napi::Number::New(env, static_cast<double>(v))) : Napi::BigInt::New(env, v);
    }
    case GGUF_TYPE_INT64: {
      const int64_t v = gguf_get_val_i64(g, id);
      return std::llabs(v) <= (1LL << 53) ? Napi::Value(Napi::Number::New(env, static_cast<double>(v))) : Napi::BigInt::New(env, v);
    }
    default: return Napi::Number::New(env, Number(g, gguf_get_key(g, id)).value_or(0));
  }
}

Napi::Value Array(Napi::Env env, const gguf_context* g, int64_t id) {
  const gguf_type type = gguf_get_arr_type(g, id);
  const size_t n = gguf_get_arr_n(g, id);
  Napi::Array out = Napi::Array::New(env, n);
  if (type == GGUF_TYPE_STRING) {
    for (size_t i = 0; i < n; i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, gguf_get_arr_str(g, id, i)));
    return out;
  }
  const void* data = gguf_get_arr_data(g, id);
  for (size_t i = 0; i < n; i++) {
    Napi::Value item;
    if (type == GGUF_TYPE_UINT64 && static_cast<const uint64_t*>(data)[i] > (1ULL << 53)) {
      item = Napi::BigInt::New(env, static_cast<const uint64_t*>(data)[i]);
    } else if (type == GGUF_TYPE_INT64 && std::llabs(static_cast<const int64_t*>(data)[i]) > (1LL << 53)) {
      item = Napi::BigInt::New(env, static_cast<const int64_t*>(data)[i]);
    } else if (type == GGUF_TYPE_BOOL) {
      item = Napi::Boolean::New(env, ArrayItem(data, type, i) != 0);
    } else {
      item = Napi::Number::New(env, ArrayItem(data, type, i));
    }
    out.Set(static_cast<uint32_t>(i), item);
  }
  return out;
}

}  // namespace

Failure ReadGgufHeader(const std::string& path, GgufPtr& out) {
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    std::setvbuf(f, nullptr, _IOFBF, 1 << 16);
    const std::string problem = TypeScan(f).Problem();
    std::fclose(f);
    if (!problem.empty()) {
      return {"ERR_GGUF_INVALID", "The GGUF file " + path + " is invalid: " + problem};
    }
  }
  LogCapture capture;
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  out.reset(gguf_init_from_file(path.c_str(), params));
  if (!out) {
    return {"ERR_GGUF_INVALID", "The GGUF file " + path + " is invalid or truncated. llama.cpp said: " + capture.Text()};
  }
  return {};
}

Failure CheckLoadable(const gguf_context* g, const std::string& path) {
  std::string problem = DuplicateToken(g);
  if (problem.empty()) problem = WordPieceByteToken(g);
  if (problem.empty()) problem = RwkvTokenizerLoops(g);
  if (problem.empty()) problem = BadHyperparameters(g);
  if (problem.empty()) return {};
  return {"ERR_GGUF_INVALID", "The GGUF file " + path + " cannot be loaded: " + problem +
                                  ". The file is damaged or was written by a faulty tool."};
}

Failure CheckTensorTypes(const gguf_context* g, const std::string& path) {
  for (int64_t i = 0; i < gguf_get_n_tensors(g); i++) {
    const ggml_type type = gguf_get_tensor_type(g, i);
    if (CpuTraits(type).vecDot) continue;
    return {"ERR_UNSUPPORTED", "Cannot use " + path + ": tensor " + gguf_get_tensor_name(g, i) + " is stored as " +
                                   ggml_type_name(type) + ", a type ggml's CPU backend cannot compute with (weights must be f32, "
                                   "f16, bf16 or a quantised type with a dot product). Running it would abort the process. The "
                                   "file was written by a faulty converter or is damaged: convert or quantize it again with "
                                   "llama.cpp's tools."};
  }
  return {};
}

Napi::Object MetadataToJs(Napi::Env env, const gguf_context* g) {
  Napi::Object out = Napi::Object::New(env);
  for (int64_t id = 0; id < gguf_get_n_kv(g); id++) {
    const char* key = gguf_get_key(g, id);
    if (IsVocabularyKey(key)) continue;
    const gguf_type type = gguf_get_kv_type(g, id);
    out.Set(key, type == GGUF_TYPE_ARRAY ? Array(env, g, id) : Scalar(env, g, id, type));
  }
  return out;
}

}  // namespace llama_napi
