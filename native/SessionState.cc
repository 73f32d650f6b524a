#include "SessionState.h"

#include <cstring>
#include <string>

namespace llama_napi {
namespace {

constexpr char kMagic[8] = {'L', 'N', 'A', 'P', 'I', 'S', 'Q', '1'};
constexpr uint32_t kVersion = 1;

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
    std::memcpy(dst, data_ + pos_, n);
    pos_ += n;
    return true;
  }
  size_t Remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

Failure Invalid(const std::string& what) {
  return {"ERR_STATE", "The saved state is invalid: " + what + ". It must come from saveState() of this library."};
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
  if (seq.nKv > 0) {
    kv.resize(llama_state_seq_get_size(ctx, seq.id));
    const size_t n = llama_state_seq_get_data(ctx, kv.data(), kv.size(), seq.id);
    if (n == 0) return {"ERR_STATE", "llama.cpp could not copy the sequence's state"};
    kv.resize(n);
  }
  const uint32_t header[5] = {kVersion, static_cast<uint32_t>(nVocab), static_cast<uint32_t>(seq.tokens.size()),
                              static_cast<uint32_t>(seq.nKv), seq.logitsValid ? 1u : 0u};
  const uint64_t kvSize = kv.size();
  const size_t tokenBytes = seq.tokens.size() * sizeof(llama_token);
  const size_t logitBytes = seq.logitsValid ? nVocab * sizeof(float) : 0;
  out.resize(sizeof(kMagic) + sizeof(header) + tokenBytes + logitBytes + sizeof(kvSize) + kv.size());
  uint8_t* p = out.data();
  auto put = [&p](const void* src, size_t n) {
    if (n > 0) std::memcpy(p, src, n);
    p += n;
  };
  put(kMagic, sizeof(kMagic));
  put(header, sizeof(header));
  put(seq.tokens.data(), tokenBytes);
  put(seq.logits, logitBytes);
  put(&kvSize, sizeof(kvSize));
  put(kv.data(), kv.size());
  return {};
}

Failure ParseState(const uint8_t* data, size_t size, int32_t nVocab, uint32_t capacity, ParsedState& out) {
  Reader r(data, size);
  char magic[8];
  uint32_t version = 0, vocab = 0, nTokens = 0, nKv = 0, hasLogits = 0;
  if (!r.Bytes(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) return Invalid("wrong magic bytes");
  if (!r.Get(version) || version != kVersion) return Invalid("unsupported version " + std::to_string(version));
  if (!r.Get(vocab) || !r.Get(nTokens) || !r.Get(nKv) || !r.Get(hasLogits)) return Invalid("the header is truncated");
  if (vocab != static_cast<uint32_t>(nVocab)) {
    return {"ERR_STATE", "The saved state is for a model with " + std::to_string(vocab) + " tokens, not this one (" +
                             std::to_string(nVocab) + ")"};
  }
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
    if (r.Remaining() / sizeof(float) < vocab) return Invalid("the logits are truncated");
    out.logits.resize(vocab);
    r.Bytes(out.logits.data(), vocab * sizeof(float));
  }
  uint64_t kvSize = 0;
  if (!r.Get(kvSize) || kvSize != r.Remaining()) return Invalid("the KV state size does not match the data");
  if ((kvSize == 0) != (nKv == 0)) return Invalid("the KV state does not match the token count");
  out.llamaState.resize(static_cast<size_t>(kvSize));
  r.Bytes(out.llamaState.data(), out.llamaState.size());
  out.nKv = nKv;
  return {};
}

Failure RestoreSequence(llama_context* ctx, const ParsedState& state, SeqState& seq, size_t nVocab) {
  compat::SeqRemove(ctx, seq.id, -1, -1);
  seq.tokens.clear();
  seq.nKv = 0;
  seq.needTrim = false;
  seq.logitsValid = false;
  if (state.nKv > 0) {
    const size_t n = llama_state_seq_set_data(ctx, state.llamaState.data(), state.llamaState.size(), seq.id);
    if (n == 0 || compat::SeqPosMax(ctx, seq.id) + 1 != static_cast<llama_pos>(state.nKv)) {
      compat::SeqRemove(ctx, seq.id, -1, -1);
      return {"ERR_STATE", "llama.cpp rejected the saved KV state: it was saved with a different model or context settings"};
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
