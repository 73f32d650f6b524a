#include "SessionState.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <typeinfo>

// llama.cpp's memory classes (what llama_memory_t points to) and the model's hyperparameters.
// The C API has no way to tell how a sequence's state is framed (how many streams, which cache
// comes first, whether V is transposed), and saveState/loadState must know to re-frame it. Only
// the exact classes below are re-framed (typeid, not dynamic_cast: a subclass may write more);
// any other memory type is saved as llama.cpp's own bytes.
#include "../vendor/llama.cpp/src/llama-kv-cache-iswa.h"
#include "../vendor/llama.cpp/src/llama-kv-cache.h"
#include "../vendor/llama.cpp/src/llama-memory-hybrid.h"
#include "../vendor/llama.cpp/src/llama-memory-recurrent.h"
#include "../vendor/llama.cpp/src/llama-model.h"

namespace llama_napi {
namespace {

constexpr char kMagic[8] = {'L', 'N', 'A', 'P', 'I', 'S', 'Q', '1'};
constexpr size_t kHeaderBytes = sizeof(kMagic) + 4 + 4 + 8 + 8;
// llama_context::state_seq_get_data writes this magic and the sequence id before the memory's state.
constexpr uint32_t kLlamaSeqMagic = 0xaf143cd8;
constexpr uint32_t kMemoryNone = 0, kMemoryParts = 1, kMemoryOpaque = 2;
constexpr uint32_t kPartCache = 1, kPartRaw = 2;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  bool Get(T& v) {
    if (size_ - pos_ < sizeof(T)) return false;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool Bytes(void* dst, size_t n) {
    if (size_ - pos_ < n) return false;
    if (n > 0) std::memcpy(dst, data_ + pos_, n);
    pos_ += n;
    return true;
  }
  // Skips `count` items of `each` bytes (overflow-safe); returns where they start.
  bool Skip(uint64_t count, uint64_t each, size_t& at) {
    if (each != 0 && count > (size_ - pos_) / each) return false;
    at = pos_;
    pos_ += static_cast<size_t>(count * each);
    return true;
  }
  const uint8_t* Here() const { return data_ + pos_; }
  size_t Pos() const { return pos_; }
  size_t Remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  template <typename T>
  void Put(const T& v) {
    Bytes(&v, sizeof(T));
  }
  void Bytes(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = out_.size();
    out_.resize(at + n);
    std::memcpy(out_.data() + at, p, n);
  }
  // Appends a rows × cols matrix of `el`-byte elements transposed (src row-major, rows apart by srcStride).
  void Transposed(const uint8_t* src, size_t rows, size_t cols, size_t el, size_t srcStride) {
    const size_t at = out_.size();
    out_.resize(at + rows * cols * el);
    uint8_t* dst = out_.data() + at;
    for (size_t c = 0; c < cols; c++) {
      for (size_t r = 0; r < rows; r++) std::memcpy(dst + (c * rows + r) * el, src + r * srcStride + c * el, el);
    }
  }

 private:
  std::vector<uint8_t>& out_;
};

// A 64-bit checksum of the payload: catches truncation and corruption before llama.cpp sees
// anything (tests/state-portability.test.ts computes the same in JS).
uint64_t Checksum(const uint8_t* p, size_t n) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;
  uint64_t h = 0x6C6C616D614E4150ULL;
  auto mix = [&h](uint64_t w) {
    h ^= w;
    h *= kMul;
    h ^= h >> 29;
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    mix(w);
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    mix(w);
  }
  mix(static_cast<uint64_t>(n));
  return h;
}

Failure Invalid(const std::string& what) {
  return {"ERR_STATE", "The saved state is invalid: " + what + ". It must come from saveState() of this library."};
}

Failure Internal(const std::string& what) {
  return {"ERR_STATE", "Saving the session's state failed: " + what};
}

bool ValidType(int32_t t) {
  return t >= 0 && t < GGML_TYPE_COUNT && ggml_blck_size(static_cast<ggml_type>(t)) > 0 &&
         ggml_type_size(static_cast<ggml_type>(t)) > 0;
}

std::string TypeName(int32_t t) { return ValidType(t) ? ggml_type_name(static_cast<ggml_type>(t)) : "type " + std::to_string(t); }

// --- the model ---

struct Fingerprint {
  std::string arch;
  uint32_t nVocab = 0, nLayer = 0, nEmbd = 0, nHead = 0, nHeadKv = 0, nSwa = 0;
  int32_t ropeType = 0;
  uint64_t nParams = 0, vocabHash = 0;
};

Fingerprint FingerprintOf(const llama_model* model) {
  Fingerprint f;
  char buf[128];
  const int32_t n = llama_model_meta_val_str(model, "general.architecture", buf, sizeof(buf));
  if (n > 0) f.arch.assign(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
  const llama_vocab* vocab = llama_model_get_vocab(model);
  f.nVocab = static_cast<uint32_t>(llama_vocab_n_tokens(vocab));
  // FNV-1a over every token's text: a vocabulary of the same size with other tokens differs.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint32_t t = 0; t < f.nVocab; t++) {
    const char* text = llama_vocab_get_text(vocab, static_cast<llama_token>(t));
    for (const char* c = text ? text : ""; *c; c++) h = (h ^ static_cast<uint8_t>(*c)) * 0x100000001b3ULL;
    h = (h ^ 0xff) * 0x100000001b3ULL;
  }
  f.vocabHash = h;
  f.nLayer = static_cast<uint32_t>(llama_model_n_layer(model));
  f.nEmbd = static_cast<uint32_t>(llama_model_n_embd(model));
  f.nHead = static_cast<uint32_t>(llama_model_n_head(model));
  f.nHeadKv = static_cast<uint32_t>(llama_model_n_head_kv(model));
  f.nSwa = static_cast<uint32_t>(llama_model_n_swa(model));
  f.ropeType = static_cast<int32_t>(llama_model_rope_type(model));
  f.nParams = llama_model_n_params(model);
  return f;
}

void WriteFingerprint(Writer& w, const Fingerprint& f) {
  w.Put(static_cast<uint32_t>(f.arch.size()));
  w.Bytes(f.arch.data(), f.arch.size());
  for (uint32_t v : {f.nVocab, f.nLayer, f.nEmbd, f.nHead, f.nHeadKv, f.nSwa}) w.Put(v);
  w.Put(f.ropeType);
  w.Put(f.nParams);
  w.Put(f.vocabHash);
}

bool ReadFingerprint(Reader& r, Fingerprint& f) {
  uint32_t len = 0;
  if (!r.Get(len) || len > 256 || r.Remaining() < len) return false;
  f.arch.resize(len);
  r.Bytes(f.arch.data(), len);
  return r.Get(f.nVocab) && r.Get(f.nLayer) && r.Get(f.nEmbd) && r.Get(f.nHead) && r.Get(f.nHeadKv) && r.Get(f.nSwa) &&
         r.Get(f.ropeType) && r.Get(f.nParams) && r.Get(f.vocabHash);
}

// What differs between the model that saved a state and this one, in words; empty when nothing.
std::string Differences(const Fingerprint& saved, const Fingerprint& here) {
  std::string out;
  auto add = [&out](const std::string& what, const std::string& a, const std::string& b) {
    if (a == b) return;
    out += (out.empty() ? "" : "; ") + what + " " + a + " (this model: " + b + ")";
  };
  auto num = [](uint64_t v) { return std::to_string(v); };
  add("architecture", saved.arch.empty() ? "(none)" : saved.arch, here.arch.empty() ? "(none)" : here.arch);
  add("vocabulary size", num(saved.nVocab), num(here.nVocab));
  if (saved.nVocab == here.nVocab && saved.vocabHash != here.vocabHash) {
    out += std::string(out.empty() ? "" : "; ") + "vocabulary (the same size, other tokens)";
  }
  add("layer count", num(saved.nLayer), num(here.nLayer));
  add("embedding size", num(saved.nEmbd), num(here.nEmbd));
  add("attention heads", num(saved.nHead), num(here.nHead));
  add("KV heads", num(saved.nHeadKv), num(here.nHeadKv));
  add("sliding window", num(saved.nSwa), num(here.nSwa));
  add("RoPE type", std::to_string(saved.ropeType), std::to_string(here.ropeType));
  add("parameter count", num(saved.nParams), num(here.nParams));
  return out;
}

// --- the context's memory ---

struct LayerDesc {
  int32_t kType = 0, vType = 0;
  uint64_t kRow = 0, vRow = 0;
  uint32_t nEmbdV = 0;
};

struct CacheDesc {
  uint32_t nStream = 1;
  uint32_t extBytes = 0;
  bool hasV = true;
  bool vTrans = false;
  uint32_t size = 0;  // cells per stream
  std::vector<LayerDesc> layers;
};

struct MemoryDesc {
  uint32_t kind = kMemoryNone;
  std::vector<bool> partIsCache;
  std::vector<CacheDesc> caches;  // the KV cache parts, in order
};

// Whether the cache stores V transposed (without flash attention): its V view says so.
bool VTransposed(const llama_kv_cache* kv, uint32_t il) {
  ggml_init_params params = {4 * ggml_tensor_overhead(), nullptr, true};
  ggml_context* g = ggml_init(params);
  if (!g) return false;
  llama_kv_cache::slot_info sinfo;
  sinfo.s0 = 0;
  sinfo.s1 = 0;
  const ggml_tensor* v = kv->get_v(g, static_cast<int32_t>(il), 1, sinfo);
  // Not transposed: [head dim, heads, cells] (nb[1] <= nb[2]); transposed: [cells, heads, head dim].
  const bool transposed = v && v->nb[1] > v->nb[2];
  ggml_free(g);
  return transposed;
}

CacheDesc DescribeCache(const llama_kv_cache* kv, const llama_hparams& hp) {
  CacheDesc c;
  c.nStream = kv->get_n_stream();
  c.extBytes = kv->has_cell_ext() ? static_cast<uint32_t>(sizeof(llama_kv_cell_ext)) : 0;
  c.hasV = !hp.is_mla();
  c.size = kv->get_size();
  const std::vector<uint32_t> ids = kv->get_layer_ids();
  for (uint32_t il : ids) {
    LayerDesc l;
    const ggml_tensor* k = kv->get_k_storage(static_cast<int32_t>(il));
    l.kType = k->type;
    l.kRow = ggml_row_size(k->type, hp.n_embd_k_gqa(il));
    if (c.hasV) {
      l.vType = kv->type_v();
      l.nEmbdV = hp.n_embd_v_gqa(il);
      l.vRow = ggml_row_size(static_cast<ggml_type>(l.vType), l.nEmbdV);
    }
    c.layers.push_back(l);
  }
  if (c.hasV && !ids.empty()) c.vTrans = VTransposed(kv, ids[0]);
  return c;
}

MemoryDesc Describe(llama_context* ctx) {
  MemoryDesc d;
  llama_memory_i* mem = llama_get_memory(ctx);
  if (!mem) return d;
  const llama_hparams& hp = llama_get_model(ctx)->hparams;
  const std::type_info& type = typeid(*mem);
  d.kind = kMemoryParts;
  if (type == typeid(llama_kv_cache)) {
    d.partIsCache = {true};
    d.caches.push_back(DescribeCache(static_cast<llama_kv_cache*>(mem), hp));
  } else if (type == typeid(llama_kv_cache_iswa)) {
    // llama_kv_cache_iswa::state_write: the base cache, then the sliding-window one.
    auto* iswa = static_cast<llama_kv_cache_iswa*>(mem);
    d.partIsCache = {true, true};
    d.caches.push_back(DescribeCache(iswa->get_base(), hp));
    d.caches.push_back(DescribeCache(iswa->get_swa(), hp));
  } else if (type == typeid(llama_memory_hybrid)) {
    // llama_memory_hybrid::state_write: the attention cache, then the recurrent state (which
    // has no per-stream frame: one cell per sequence), kept as llama.cpp's bytes.
    d.partIsCache = {true, false};
    d.caches.push_back(DescribeCache(static_cast<llama_memory_hybrid*>(mem)->get_mem_attn(), hp));
  } else if (type == typeid(llama_memory_recurrent)) {
    d.partIsCache = {false};
  } else {
    d.kind = kMemoryOpaque;
  }
  return d;
}

// Reads one KV cache's part of llama.cpp's sequence state (llama_kv_cache::state_write: u32
// n_stream, then per stream u32 cell_count and, when not 0, the cells and their K/V rows) and
// writes it in the stream-free form.
Failure ReframeOut(Reader& r, const CacheDesc& c, Writer& w) {
  uint32_t nStream = 0;
  if (!r.Get(nStream) || nStream != c.nStream) return Internal("llama.cpp's sequence state has an unexpected stream count");
  const uint32_t nLayer = static_cast<uint32_t>(c.layers.size());
  bool found = false;
  for (uint32_t s = 0; s < nStream; s++) {
    uint32_t cells = 0;
    if (!r.Get(cells)) return Internal("llama.cpp's sequence state is truncated");
    if (cells == 0) continue;
    if (found) return Internal("llama.cpp's sequence state holds cells in two streams");
    found = true;
    w.Put(cells);
    w.Put(c.extBytes);
    w.Put(nLayer);
    w.Put(static_cast<uint32_t>(c.hasV));
    std::vector<uint8_t> ext(c.extBytes);
    for (uint32_t i = 0; i < cells; i++) {
      int32_t pos = 0, seqId = 0;
      uint32_t nSeq = 0;
      if (!r.Get(pos) || !r.Get(nSeq) || nSeq != 1 || !r.Bytes(ext.data(), ext.size()) || !r.Get(seqId)) {
        return Internal("llama.cpp's sequence state has unexpected cell metadata");
      }
      w.Put(pos);
      w.Bytes(ext.data(), ext.size());
    }
    uint32_t vTrans = 0, n = 0;
    if (!r.Get(vTrans) || !r.Get(n) || n != nLayer) return Internal("llama.cpp's sequence state has an unexpected layer count");
    if ((vTrans != 0) != c.vTrans) return Internal("llama.cpp's V cache is not laid out as expected");
    for (const LayerDesc& l : c.layers) {
      int32_t type = 0;
      uint64_t row = 0;
      size_t at = 0;
      if (!r.Get(type) || !r.Get(row) || type != l.kType || row != l.kRow || !r.Skip(cells, row, at)) {
        return Internal("llama.cpp's K cache is not laid out as expected");
      }
      w.Put(type);
      w.Put(row);
      w.Bytes(r.Here() - static_cast<size_t>(cells * row), static_cast<size_t>(cells * row));
    }
    if (!c.hasV) continue;
    for (const LayerDesc& l : c.layers) {
      int32_t type = 0;
      size_t at = 0;
      if (!r.Get(type) || type != l.vType) return Internal("llama.cpp's V cache is not laid out as expected");
      if (!vTrans) {
        uint64_t row = 0;
        if (!r.Get(row) || row != l.vRow || !r.Skip(cells, row, at)) return Internal("llama.cpp's V cache is not laid out as expected");
        w.Put(type);
        w.Put(row);
        w.Bytes(r.Here() - static_cast<size_t>(cells * row), static_cast<size_t>(cells * row));
      } else {
        uint32_t el = 0, nEmbd = 0;
        if (!r.Get(el) || !r.Get(nEmbd) || el != ggml_type_size(static_cast<ggml_type>(type)) || nEmbd != l.nEmbdV ||
            static_cast<uint64_t>(el) * nEmbd != l.vRow || !r.Skip(static_cast<uint64_t>(cells) * nEmbd, el, at)) {
          return Internal("llama.cpp's transposed V cache is not laid out as expected");
        }
        w.Put(type);
        w.Put(l.vRow);
        // llama.cpp's layout: nEmbd rows of `cells` elements; ours: `cells` rows of nEmbd.
        w.Transposed(r.Here() - static_cast<size_t>(cells) * nEmbd * el, nEmbd, cells, el, static_cast<size_t>(cells) * el);
      }
    }
  }
  // Every cache holds at least the session's last position (ParseCachePart requires it).
  if (!found) return Internal("llama.cpp's sequence state holds no cell of the session");
  return {};
}

// The refusal for a KV cache part that does not fit this context's cache; empty when it fits.
Failure CheckFits(const ParsedState::Part& p, const CacheDesc& c) {
  const std::string other = "The saved state's KV cache does not match this context's: ";
  if (p.layers.size() != c.layers.size() || p.extBytes != c.extBytes || p.hasV != c.hasV) {
    return {"ERR_STATE", other + "it has " + std::to_string(p.layers.size()) + " layers" + (p.hasV ? "" : " without V") +
                             ", this context's has " + std::to_string(c.layers.size()) + (c.hasV ? "" : " without V") +
                             ". It was saved with a different model"};
  }
  for (size_t l = 0; l < c.layers.size(); l++) {
    const ParsedState::Layer& s = p.layers[l];
    const LayerDesc& t = c.layers[l];
    const bool kDiffers = s.kType != t.kType, vDiffers = c.hasV && s.vType != t.vType;
    if (kDiffers || vDiffers) {
      const std::string saved = kDiffers ? TypeName(s.kType) : TypeName(s.vType);
      const std::string here = kDiffers ? TypeName(t.kType) : TypeName(t.vType);
      return {"ERR_STATE", std::string("The saved state holds a KV cache of type ") + saved + " (its " + (kDiffers ? "K" : "V") +
                               " cache); this context's is " + here + ". Load it into a context created with kvCacheType: \"" +
                               saved + "\""};
    }
    if (s.kRow != t.kRow || (c.hasV && s.vRow != t.vRow)) {
      return {"ERR_STATE", other + "layer " + std::to_string(l) + " holds " + std::to_string(s.kRow) + "+" +
                               std::to_string(s.vRow) + " bytes per cell, this context's " + std::to_string(t.kRow) + "+" +
                               std::to_string(t.vRow) + ". It was saved with a different model"};
    }
    if (c.hasV && c.vTrans && ggml_blck_size(static_cast<ggml_type>(t.vType)) != 1) {
      return {"ERR_STATE", other + "its V cache type " + TypeName(t.vType) + " cannot be stored transposed"};
    }
  }
  if (p.cells > c.size) {
    return {"ERR_STATE", other + "it holds " + std::to_string(p.cells) + " cells, more than this context's cache (" +
                             std::to_string(c.size) + ")"};
  }
  return {};
}

// Writes one KV cache part in llama.cpp's frame for the target context: n_stream streams, all
// empty but the target sequence's.
void ReframeIn(const ParsedState& st, const ParsedState::Part& p, const CacheDesc& c, llama_seq_id seq, Writer& w) {
  const uint8_t* data = st.data.data();
  const uint32_t stream = c.nStream == 1 ? 0 : static_cast<uint32_t>(seq);
  w.Put(c.nStream);
  for (uint32_t s = 0; s < c.nStream; s++) {
    if (s != stream || p.cells == 0) {
      w.Put(uint32_t{0});
      continue;
    }
    w.Put(p.cells);
    const size_t cellBytes = sizeof(int32_t) + p.extBytes;
    for (uint32_t i = 0; i < p.cells; i++) {
      const uint8_t* cell = data + p.cellsAt + i * cellBytes;
      w.Bytes(cell, sizeof(int32_t));  // pos
      w.Put(uint32_t{1});              // one sequence id
      w.Bytes(cell + sizeof(int32_t), p.extBytes);
      w.Put(static_cast<int32_t>(seq));
    }
    w.Put(static_cast<uint32_t>(c.vTrans));
    w.Put(static_cast<uint32_t>(p.layers.size()));
    for (const ParsedState::Layer& l : p.layers) {
      w.Put(l.kType);
      w.Put(l.kRow);
      w.Bytes(data + l.kAt, static_cast<size_t>(p.cells * l.kRow));
    }
    if (!c.hasV) continue;
    for (size_t li = 0; li < p.layers.size(); li++) {
      const ParsedState::Layer& l = p.layers[li];
      w.Put(l.vType);
      if (!c.vTrans) {
        w.Put(l.vRow);
        w.Bytes(data + l.vAt, static_cast<size_t>(p.cells * l.vRow));
      } else {
        const uint32_t el = static_cast<uint32_t>(ggml_type_size(static_cast<ggml_type>(l.vType)));
        const uint32_t nEmbd = c.layers[li].nEmbdV;
        w.Put(el);
        w.Put(nEmbd);
        w.Transposed(data + l.vAt, p.cells, nEmbd, el, static_cast<size_t>(l.vRow));
      }
    }
  }
}

Failure ParseCachePart(Reader& r, uint32_t nKv, int32_t nVocab, ParsedState::Part& p) {
  uint32_t nLayer = 0, hasV = 0;
  if (!r.Get(p.cells) || !r.Get(p.extBytes) || !r.Get(nLayer) || !r.Get(hasV)) return Invalid("a KV cache header is truncated");
  if (p.cells > nKv) return Invalid("a KV cache holds more cells than the session has tokens");
  if (p.extBytes != 0 && p.extBytes != sizeof(llama_kv_cell_ext)) return Invalid("a KV cache has an unknown cell size");
  if (nLayer == 0 || nLayer > 65536 || hasV > 1) return Invalid("a KV cache header is inconsistent");
  p.hasV = hasV != 0;
  const size_t cellBytes = sizeof(int32_t) + p.extBytes;
  if (!r.Skip(p.cells, cellBytes, p.cellsAt)) return Invalid("the KV cells are truncated");
  // Every cache holds the session's last position, and each position once (a sliding-window
  // cache holds only the last ones).
  if (p.cells == 0) return Invalid("a KV cache holds no cell");
  std::vector<bool> seen(nKv, false);
  for (uint32_t i = 0; i < p.cells; i++) {
    int32_t pos = 0;
    Reader cell(r.Here() - (static_cast<size_t>(p.cells) - i) * cellBytes, cellBytes);
    llama_kv_cell_ext ext;
    cell.Get(pos);
    if (pos < 0 || static_cast<uint32_t>(pos) >= nKv || seen[pos]) {
      return Invalid("a KV cell has position " + std::to_string(pos) + ", repeated or outside the session's 0.." +
                     std::to_string(nKv - 1));
    }
    seen[pos] = true;
    if (p.extBytes) {
      cell.Bytes(&ext, sizeof(ext));
      if (ext.tok != LLAMA_TOKEN_NULL && (ext.tok < 0 || ext.tok >= nVocab)) return Invalid("a KV cell holds an invalid token");
    }
  }
  if (!seen[nKv - 1]) return Invalid("a KV cache does not hold the session's last position");
  p.layers.resize(nLayer);
  auto rows = [&](int32_t& type, uint64_t& row, size_t& at, const char* what) -> Failure {
    if (!r.Get(type) || !r.Get(row)) return Invalid(std::string("the ") + what + " cache is truncated");
    if (!ValidType(type)) return Invalid(std::string("the ") + what + " cache has an unknown type " + std::to_string(type));
    if (row == 0 || row > (1u << 30)) return Invalid(std::string("the ") + what + " cache has an invalid row size");
    if (!r.Skip(p.cells, row, at)) return Invalid(std::string("the ") + what + " cache is truncated");
    return {};
  };
  for (ParsedState::Layer& l : p.layers) {
    Failure f = rows(l.kType, l.kRow, l.kAt, "K");
    if (!f.ok()) return f;
  }
  if (p.hasV) {
    for (ParsedState::Layer& l : p.layers) {
      Failure f = rows(l.vType, l.vRow, l.vAt, "V");
      if (!f.ok()) return f;
    }
  }
  return {};
}

}  // namespace

Failure CopyKv(llama_context* fromCtx, llama_seq_id from, llama_context* toCtx, llama_seq_id to) {
  std::vector<uint8_t> buf(llama_state_seq_get_size(fromCtx, from));
  const size_t n = llama_state_seq_get_data(fromCtx, buf.data(), buf.size(), from);
  if (n == 0 || llama_state_seq_set_data(toCtx, buf.data(), n, to) == 0) {
    compat::SeqRemove(toCtx, to, -1, -1);
    return {"ERR_STATE", "Copying the sequence's KV cache failed"};
  }
  return {};
}

Failure CopySequence(llama_context* ctx, SeqState& src, SeqState& dst, size_t nVocab) {
  compat::SeqRemove(ctx, dst.id, -1, -1);
  if (src.nKv > 0) {
    Failure f = CopyKv(ctx, src.id, ctx, dst.id);
    if (!f.ok()) return f;
  }
  dst.tokens = src.tokens;
  dst.nKv = src.nKv;
  dst.needTrim = false;
  dst.logitsValid = src.logitsValid;
  if (src.logitsValid) std::memcpy(dst.logits, src.logits, nVocab * sizeof(float));
  return {};
}

Failure SerializeSequence(llama_context* ctx, const SeqState& seq, size_t nVocab, std::vector<uint8_t>& out) {
  std::vector<uint8_t> kv;
  MemoryDesc desc;
  if (seq.nKv > 0) {
    desc = Describe(ctx);
    if (desc.kind == kMemoryNone) return Internal("this context has no KV cache");
    kv.resize(llama_state_seq_get_size(ctx, seq.id));
    const size_t n = llama_state_seq_get_data(ctx, kv.data(), kv.size(), seq.id);
    if (n == 0) return Internal("llama.cpp could not copy the sequence's state");
    kv.resize(n);
  }
  out.clear();
  out.reserve(kHeaderBytes + 256 + seq.tokens.size() * sizeof(llama_token) + nVocab * sizeof(float) + kv.size());
  Writer w(out);
  w.Bytes(kMagic, sizeof(kMagic));
  w.Put(kStateFormatVersion);
  w.Put(uint32_t{0});
  w.Put(uint64_t{0});  // payload size and checksum, filled in at the end
  w.Put(uint64_t{0});
  WriteFingerprint(w, FingerprintOf(llama_get_model(ctx)));
  w.Put(static_cast<uint32_t>(seq.tokens.size()));
  w.Put(static_cast<uint32_t>(seq.nKv));
  w.Put(seq.logitsValid ? 1u : 0u);
  w.Bytes(seq.tokens.data(), seq.tokens.size() * sizeof(llama_token));
  if (seq.logitsValid) w.Bytes(seq.logits, nVocab * sizeof(float));
  if (seq.nKv == 0) {
    w.Put(kMemoryNone);
  } else {
    Reader r(kv.data(), kv.size());
    uint32_t magic = 0;
    int32_t seqId = 0;
    if (!r.Get(magic) || magic != kLlamaSeqMagic || !r.Get(seqId)) return Internal("llama.cpp's sequence state has an unknown header");
    w.Put(desc.kind);
    if (desc.kind == kMemoryOpaque) {
      w.Put(llama_n_seq_max(ctx));
      w.Put(static_cast<uint64_t>(r.Remaining()));
      w.Bytes(r.Here(), r.Remaining());
    } else {
      w.Put(static_cast<uint32_t>(desc.partIsCache.size()));
      size_t cache = 0;
      for (bool isCache : desc.partIsCache) {
        if (isCache) {
          w.Put(kPartCache);
          Failure f = ReframeOut(r, desc.caches[cache++], w);
          if (!f.ok()) return f;
        } else {
          // The raw part is the rest (Describe puts it last).
          w.Put(kPartRaw);
          w.Put(static_cast<uint64_t>(r.Remaining()));
          w.Bytes(r.Here(), r.Remaining());
          size_t at = 0;
          r.Skip(r.Remaining(), 1, at);
        }
      }
      if (r.Remaining() != 0) return Internal("llama.cpp's sequence state is longer than expected");
    }
  }
  const uint64_t payload = out.size() - kHeaderBytes;
  const uint64_t sum = Checksum(out.data() + kHeaderBytes, out.size() - kHeaderBytes);
  std::memcpy(out.data() + kHeaderBytes - 16, &payload, sizeof(payload));
  std::memcpy(out.data() + kHeaderBytes - 8, &sum, sizeof(sum));
  return {};
}

Failure ParseState(const llama_model* model, uint32_t capacity, ParsedState& out) {
  Reader h(out.data.data(), out.data.size());
  char magic[8];
  uint32_t version = 0, reserved = 0;
  uint64_t payload = 0, sum = 0;
  if (!h.Bytes(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return Invalid("it does not start with llama-napi's state magic bytes");
  }
  if (!h.Get(version)) return Invalid("the header is truncated");
  if (version != kStateFormatVersion) {
    return {"ERR_STATE", "The saved state has format version " + std::to_string(version) + ", from " +
                             (version < kStateFormatVersion ? "an older" : "a newer") +
                             " llama-napi; this version reads format version " + std::to_string(kStateFormatVersion) +
                             " only. Save the session again with this version"};
  }
  if (!h.Get(reserved) || !h.Get(payload) || !h.Get(sum)) return Invalid("the header is truncated");
  if (payload != h.Remaining()) {
    return Invalid(payload > h.Remaining() ? "it is truncated (" + std::to_string(h.Remaining()) + " of " + std::to_string(payload) + " bytes)"
                                           : "it has " + std::to_string(h.Remaining() - payload) + " bytes too many");
  }
  if (reserved != 0 || Checksum(h.Here(), h.Remaining()) != sum) return Invalid("it is corrupted (its checksum does not match)");

  Reader r(out.data.data(), out.data.size());
  size_t skipped = 0;
  r.Skip(kHeaderBytes, 1, skipped);
  Fingerprint saved;
  if (!ReadFingerprint(r, saved)) return Invalid("the model description is truncated");
  const std::string differences = Differences(saved, FingerprintOf(model));
  if (!differences.empty()) {
    return {"ERR_STATE", "The saved state is from a different model: " + differences +
                             ". A state loads only into a context of the model that saved it"};
  }
  const int32_t nVocab = static_cast<int32_t>(saved.nVocab);

  uint32_t nTokens = 0, nKv = 0, hasLogits = 0;
  if (!r.Get(nTokens) || !r.Get(nKv) || !r.Get(hasLogits)) return Invalid("the session header is truncated");
  if (nTokens > capacity) {
    return {"ERR_CONTEXT_FULL", "The saved session holds " + std::to_string(nTokens) +
                                    " tokens, more than a session of this context can (" + std::to_string(capacity) + ")"};
  }
  if (nKv > nTokens || hasLogits > 1) return Invalid("inconsistent header");
  if (r.Remaining() / sizeof(llama_token) < nTokens) return Invalid("the token list is truncated");
  out.tokens.resize(nTokens);
  r.Bytes(out.tokens.data(), nTokens * sizeof(llama_token));
  for (llama_token t : out.tokens) {
    if (t < 0 || t >= nVocab) return Invalid("it holds token " + std::to_string(t) + ", outside this model's vocabulary");
  }
  if (hasLogits) {
    if (r.Remaining() / sizeof(float) < saved.nVocab) return Invalid("the logits are truncated");
    out.logits.resize(saved.nVocab);
    r.Bytes(out.logits.data(), saved.nVocab * sizeof(float));
  }
  out.nKv = nKv;
  if (!r.Get(out.memoryKind)) return Invalid("the KV state is missing");
  if ((out.memoryKind == kMemoryNone) != (nKv == 0)) return Invalid("the KV state does not match the token count");
  if (out.memoryKind == kMemoryOpaque) {
    uint64_t n = 0;
    if (!r.Get(out.savedSequences) || !r.Get(n) || n == 0 || !r.Skip(n, 1, out.opaqueAt)) return Invalid("the KV state is truncated");
    out.opaqueSize = static_cast<size_t>(n);
  } else if (out.memoryKind == kMemoryParts) {
    uint32_t nParts = 0;
    if (!r.Get(nParts) || nParts == 0 || nParts > 8) return Invalid("the KV state has an invalid part count");
    for (uint32_t i = 0; i < nParts; i++) {
      uint32_t kind = 0;
      ParsedState::Part p;
      if (!r.Get(kind)) return Invalid("the KV state is truncated");
      if (kind == kPartCache) {
        Failure f = ParseCachePart(r, nKv, nVocab, p);
        if (!f.ok()) return f;
      } else if (kind == kPartRaw) {
        uint64_t n = 0;
        p.cache = false;
        if (!r.Get(n) || !r.Skip(n, 1, p.rawAt)) return Invalid("the KV state is truncated");
        p.rawSize = static_cast<size_t>(n);
      } else {
        return Invalid("the KV state has an unknown part");
      }
      out.parts.push_back(std::move(p));
    }
  } else if (out.memoryKind != kMemoryNone) {
    return Invalid("the KV state has an unknown kind");
  }
  if (r.Remaining() != 0) return Invalid("it has data after the KV state");
  return {};
}

Failure RestoreSequence(llama_context* ctx, const ParsedState& state, SeqState& seq, size_t nVocab) {
  // Everything that can refuse the state is checked before the sequence is touched.
  std::vector<uint8_t> blob;
  if (state.nKv > 0) {
    const MemoryDesc desc = Describe(ctx);
    if (desc.kind != state.memoryKind) {
      return {"ERR_STATE", std::string("The saved state's KV cache is laid out for another kind of memory than this context's (") +
                               (state.memoryKind == kMemoryOpaque ? "llama.cpp's own layout" : "llama-napi's portable layout") +
                               "). It was saved with a different model or llama.cpp version"};
    }
    Writer w(blob);
    w.Put(kLlamaSeqMagic);
    w.Put(static_cast<int32_t>(seq.id));
    if (state.memoryKind == kMemoryOpaque) {
      w.Bytes(state.data.data() + state.opaqueAt, state.opaqueSize);
    } else {
      if (state.parts.size() != desc.partIsCache.size()) {
        return {"ERR_STATE", "The saved state's KV cache has " + std::to_string(state.parts.size()) +
                                 " parts, this context's " + std::to_string(desc.partIsCache.size()) +
                                 ". It was saved with a different model"};
      }
      size_t cache = 0;
      for (size_t i = 0; i < state.parts.size(); i++) {
        const ParsedState::Part& p = state.parts[i];
        if (p.cache != desc.partIsCache[i]) {
          return {"ERR_STATE", "The saved state's KV cache is made of other parts than this context's. It was saved with a different model"};
        }
        if (!p.cache) {
          w.Bytes(state.data.data() + p.rawAt, p.rawSize);
          continue;
        }
        const CacheDesc& c = desc.caches[cache++];
        Failure f = CheckFits(p, c);
        if (!f.ok()) return f;
        ReframeIn(state, p, c, seq.id, w);
      }
    }
  }

  compat::SeqRemove(ctx, seq.id, -1, -1);
  seq.tokens.clear();
  seq.nKv = 0;
  seq.needTrim = false;
  seq.logitsValid = false;
  if (state.nKv > 0) {
    const size_t n = llama_state_seq_set_data(ctx, blob.data(), blob.size(), seq.id);
    if (n != blob.size() || compat::SeqPosMax(ctx, seq.id) + 1 != static_cast<llama_pos>(state.nKv)) {
      compat::SeqRemove(ctx, seq.id, -1, -1);
      std::string why = "llama.cpp could not restore the saved KV cache into this context";
      if (state.memoryKind == kMemoryOpaque && state.savedSequences != llama_n_seq_max(ctx)) {
        why += ": this model's memory is saved in llama.cpp's own layout, which loads only into a context with the same "
               "sequences and unifiedKvCache settings (saved with " +
               std::to_string(state.savedSequences) + " sequences, this context has " + std::to_string(llama_n_seq_max(ctx)) + ")";
      }
      return {"ERR_STATE", why + ". The session is now empty"};
    }
  }
  seq.tokens = state.tokens;
  seq.nKv = state.nKv;
  if (!state.logits.empty() && state.nKv == state.tokens.size()) {
    std::memcpy(seq.logits, state.logits.data(), nVocab * sizeof(float));
    seq.logitsValid = true;
  }
  return {};
}

}  // namespace llama_napi
