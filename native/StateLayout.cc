#include "StateLayout.h"

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

namespace llama_napi::state {
namespace {

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

}  // namespace

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

}  // namespace llama_napi::state
