#include "SessionState.h"

#include <cstring>
#include <string>

#include "StateFormat.h"
#include "StateLayout.h"

namespace llama_napi {

using namespace state;

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
  dst.media = src.media;  // the chunks are shared, read-only
  dst.encoderInput = src.encoderInput;
  dst.encoderVersion = src.encoderVersion;
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
  seq.media.clear();
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
  seq.media.clear();
  seq.nKv = state.nKv;
  if (!state.logits.empty() && state.nKv == state.tokens.size()) {
    std::memcpy(seq.logits, state.logits.data(), nVocab * sizeof(float));
    seq.logitsValid = true;
  }
  return {};
}

}  // namespace llama_napi
