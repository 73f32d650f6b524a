#include "StateFormat.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace llama_napi::state {

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

}  // namespace llama_napi::state
