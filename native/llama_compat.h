// What the addon needs from llama.cpp beyond one plain call to a llama.h function. Code
// elsewhere in native/ calls llama.h directly where one call does the job (llama_vocab_bos,
// llama_model_n_layer, llama_sampler_init_top_k, ...: wrapping those would only rename them).
// This file holds the rest, so that each of these is written once:
//  - ownership: each llama handle type gets a std::unique_ptr whose deleter is the matching
//    llama free function, and Batch owns a llama_batch;
//  - calls with a protocol: the size-then-fill buffers of llama_tokenize, llama_detokenize,
//    llama_token_to_piece and llama_chat_apply_template; the KV cache's sequence operations
//    (llama_memory_seq_*);
//  - the C++ exceptions llama.cpp's C API lets out (its tokenizers), caught here;
//  - everything that reaches past llama.h into llama.cpp's sources (src/llama-ext.h,
//    src/llama-vocab.h: what the C API does not expose), and ggml's CPU thread pool, looked up
//    through the backend registry.
// When llama.cpp reshapes one of these, this file is where it changes.
#pragma once

#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <llama.h>

// llama.cpp's staging API (src/llama-ext.h), for llama_get_memory_breakdown.
#include "../vendor/llama.cpp/src/llama-ext.h"
// llama.cpp's vocabulary class (src/llama-vocab.h: what llama_vocab is behind llama.h's opaque
// pointer), for the two flags its C API does not expose: the clean-up of spaces and the space prefix.
#include "../vendor/llama.cpp/src/llama-vocab.h"

#include "Backends.h"

#include <exception>
#include <memory>
#include <string>
#include <algorithm>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace llama_napi::compat {

struct ModelDeleter {
  void operator()(llama_model* m) const {
    llama_model_free(m);
#if defined(__GLIBC__)
    // glibc keeps freed memory in the arena of the thread that allocated it (a model is loaded
    // on a libuv worker thread; its vocabulary alone is megabytes): give it back to the system,
    // or every loader thread would keep a model's worth of heap after the model is gone.
    malloc_trim(0);
#endif
  }
};
struct ContextDeleter {
  void operator()(llama_context* c) const { llama_free(c); }
};
struct SamplerDeleter {
  void operator()(llama_sampler* s) const { llama_sampler_free(s); }
};

using ModelPtr = std::unique_ptr<llama_model, ModelDeleter>;      // owns a llama_model
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;  // owns a llama_context
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;  // owns a sampler (or chain)

// A llama_batch allocated with llama_batch_init and freed with llama_batch_free.
class Batch {
 public:
  Batch(int32_t capacity) : capacity_(capacity), batch_(llama_batch_init(capacity, 0, 1)) {}
  ~Batch() { llama_batch_free(batch_); }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  void Clear() { batch_.n_tokens = 0; }
  int32_t Size() const { return batch_.n_tokens; }
  int32_t Capacity() const { return capacity_; }
  // Adds one token of one sequence; returns its index in the batch.
  int32_t Add(llama_token token, llama_pos pos, llama_seq_id seq, bool output) {
    const int32_t i = batch_.n_tokens++;
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = output ? 1 : 0;
    return i;
  }
  const llama_batch& Get() const { return batch_; }
  // Orders the tokens by sequence id, each sequence's tokens kept in their order, and sets
  // moved[i] to where token i went. With a KV stream per sequence (kv_unified off) llama.cpp runs
  // one model pass per run of consecutive ids in batch order (llama_batch_allocr::split_equal
  // takes only id + 1 after id): sessions in arrival order, say 3 1 2 0, take three passes
  // where 0 1 2 3 takes one.
  // Returns false, leaving `moved` alone, when the order is already ascending (the usual case:
  // no work and no allocation on that step).
  bool SortBySequence(std::vector<int32_t>& moved) {
    const int32_t n = batch_.n_tokens;
    bool sorted = true;
    for (int32_t i = 1; i < n && sorted; i++) sorted = batch_.seq_id[i - 1][0] <= batch_.seq_id[i][0];
    if (sorted) return false;
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; i++) order[static_cast<size_t>(i)] = i;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return batch_.seq_id[a][0] < batch_.seq_id[b][0]; });
    std::vector<llama_token> token(batch_.token, batch_.token + n);
    std::vector<llama_pos> pos(batch_.pos, batch_.pos + n);
    std::vector<int8_t> logits(batch_.logits, batch_.logits + n);
    std::vector<llama_seq_id> seq(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; i++) seq[static_cast<size_t>(i)] = batch_.seq_id[i][0];
    moved.assign(static_cast<size_t>(n), 0);
    for (int32_t k = 0; k < n; k++) {
      const int32_t i = order[static_cast<size_t>(k)];
      batch_.token[k] = token[static_cast<size_t>(i)];
      batch_.pos[k] = pos[static_cast<size_t>(i)];
      batch_.logits[k] = logits[static_cast<size_t>(i)];
      batch_.seq_id[k][0] = seq[static_cast<size_t>(i)];
      moved[static_cast<size_t>(i)] = k;
    }
    return true;
  }

 private:
  int32_t capacity_;
  llama_batch batch_;
};

// gpuLayers: layers to offload to the GPU devices (negative: all); 0 keeps the model on the CPU.
inline llama_model_params ModelParams(bool useMmap, bool mmapSet, bool vocabOnly, int32_t gpuLayers = 0) {
  llama_model_params p = llama_model_default_params();
  if (mmapSet) p.load_mode = useMmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  p.n_gpu_layers = gpuLayers;
  p.vocab_only = vocabOnly;
  return p;
}

inline llama_memory_t Memory(llama_context* ctx) { return llama_get_memory(ctx); }

// Removes positions [p0, p1) (p1 < 0: to the end) of one sequence from the KV cache.
inline bool SeqRemove(llama_context* ctx, llama_seq_id seq, llama_pos p0, llama_pos p1) {
  return llama_memory_seq_rm(Memory(ctx), seq, p0, p1);
}
inline void SeqCopy(llama_context* ctx, llama_seq_id src, llama_seq_id dst) {
  llama_memory_seq_cp(Memory(ctx), src, dst, -1, -1);
}
inline llama_pos SeqPosMax(llama_context* ctx, llama_seq_id seq) { return llama_memory_seq_pos_max(Memory(ctx), seq); }
inline bool CanShift(llama_context* ctx) { return llama_memory_can_shift(Memory(ctx)); }
inline void SeqShift(llama_context* ctx, llama_seq_id seq, llama_pos p0, llama_pos p1, llama_pos delta) {
  llama_memory_seq_add(Memory(ctx), seq, p0, p1, delta);
}

inline const llama_vocab* Vocab(const llama_model* m) { return llama_model_get_vocab(m); }
inline int32_t VocabSize(const llama_model* m) { return llama_vocab_n_tokens(Vocab(m)); }

// llama.cpp's vocabulary functions are C functions, but its tokenizers look tokens up with
// std::unordered_map::at and let std::out_of_range escape when a vocabulary lacks a token they
// need: an SPM vocabulary without the <0xNN> byte-fallback token for a byte of the text (found by
// the loader fuzzer, tests/fuzz/native/regressions/loader-spm-missing-byte-token.gguf). The
// wrappers below catch it, since an exception must not cross the N-API boundary or end a decode
// thread.

// Appends the text of one token (UTF-8 bytes, possibly a partial character) to `out`, without
// its first `lstrip` leading spaces. Throws what llama.cpp throws; false when llama.cpp fails.
inline bool AppendPiece(const llama_vocab* vocab, llama_token token, int32_t lstrip, bool special, std::string& out) {
  char small[64];
  int32_t n = llama_token_to_piece(vocab, token, small, sizeof(small), lstrip, special);
  if (n >= 0) {
    out.append(small, static_cast<size_t>(n));
    return true;
  }
  const size_t at = out.size();
  out.resize(at + static_cast<size_t>(-n));
  n = llama_token_to_piece(vocab, token, out.data() + at, -n, lstrip, special);
  out.resize(n > 0 ? at + static_cast<size_t>(n) : at);
  return n >= 0;
}

// Text of one token as UTF-8 bytes (possibly a partial character); empty if llama.cpp throws.
inline std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special) noexcept {
  try {
    std::string out;
    AppendPiece(vocab, token, 0, special, out);
    return out;
  } catch (const std::exception&) {
    return std::string();
  }
}

enum class TokenizeStatus { kOk, kTooLong, kVocabIncomplete };

// Whole-text tokenisation with a buffer sized from the text.
inline TokenizeStatus Tokenize(const llama_vocab* vocab, const std::string& text, bool addSpecial, bool parseSpecial,
                               std::vector<llama_token>& out) noexcept {
  if (text.size() > static_cast<size_t>(INT32_MAX)) return TokenizeStatus::kTooLong;
  try {
    out.resize(text.size() + 8);
    int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                               static_cast<int32_t>(out.size()), addSpecial, parseSpecial);
    if (n == INT32_MIN) return TokenizeStatus::kTooLong;
    if (n < 0) {
      out.resize(static_cast<size_t>(-n));
      n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                         static_cast<int32_t>(out.size()), addSpecial, parseSpecial);
      if (n < 0) return TokenizeStatus::kTooLong;
    }
    out.resize(static_cast<size_t>(n));
    return TokenizeStatus::kOk;
  } catch (const std::exception&) {
    out.clear();
    return TokenizeStatus::kVocabIncomplete;
  }
}

// Whether llama_detokenize cleans up spaces for this vocabulary (clean_up_tokenization_spaces:
// " ." → ".", " 're" → "'re", ...). llama.cpp sets it per tokenizer type and pre-tokenizer
// (llama_vocab::impl::load: BPE and WPM yes except a few pre-tokenizers, SPM, UGM, RWKV no);
// the C API does not expose it.
inline bool VocabCleansSpaces(const llama_vocab* vocab) { return vocab->get_clean_spaces(); }

// What detokenize() does by default: the clean-up only for WordPiece (BERT) vocabularies, whose
// text does not survive tokenization anyway and whose reference decoder (Hugging Face's) cleans
// up; every other tokenizer gives back exactly the text its tokens spell, as their reference
// implementations do (tiktoken and the byte-level BPE decoders, SentencePiece).
inline bool DefaultCleanSpaces(const llama_vocab* vocab) {
  return llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_WPM && VocabCleansSpaces(vocab);
}

// llama.cpp's clean-up of spaces, as llama_vocab::impl::detokenize does it (the same three passes
// over the bytes, in place), for when the vocabulary's own setting differs from the caller's.
inline void CleanSpaces(std::string& s) {
  char* text = s.data();
  // First pass: " ?", " !", " .", " ," lose the space.
  const size_t total1 = s.size();
  size_t total = total1 ? 1 : 0;
  for (size_t i = 1; i < total1; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) total--;
    text[total++] = x;
  }
  // Second pass: a single apostrophe between spaces, " ' ", loses both spaces.
  const size_t total2 = total;
  total = total ? 1 : 0;
  for (size_t i = 1; i < total2; ++i) {
    const char x = text[i];
    if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
      total--;
      text[++i] = '\0';
    }
    text[total++] = x;
  }
  // Third pass: the contractions " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd",
  // " 'll" keep it).
  const size_t total3 = total;
  total = total ? 1 : 0;
  for (size_t i = 1; i < total3; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
      const char x1 = text[i + 1];
      const char x2 = i + 2 < total3 ? text[i + 2] : '\0';
      if (x1 == 's' || x1 == 'm' || (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) total--;
    }
    text[total++] = x;
  }
  s.resize(total);
}

// Tokens to text, as llama_detokenize makes it, with the clean-up of spaces as asked (llama.cpp
// applies its vocabulary's own setting: see VocabCleansSpaces). False when llama.cpp fails or throws.
inline bool Detokenize(const llama_vocab* vocab, const std::vector<llama_token>& tokens, bool removeSpecial,
                       bool unparseSpecial, bool cleanSpaces, std::string& out) noexcept {
  try {
    if (tokens.size() > static_cast<size_t>(INT32_MAX)) return false;
    if (cleanSpaces == VocabCleansSpaces(vocab)) {
      out.resize(tokens.size() * 8 + 16);
      int32_t n = llama_detokenize(vocab, tokens.data(), static_cast<int32_t>(tokens.size()), out.data(),
                                   static_cast<int32_t>(out.size()), removeSpecial, unparseSpecial);
      if (n < 0) {
        out.resize(static_cast<size_t>(-n));
        n = llama_detokenize(vocab, tokens.data(), static_cast<int32_t>(tokens.size()), out.data(),
                             static_cast<int32_t>(out.size()), removeSpecial, unparseSpecial);
        if (n < 0) return false;
      }
      out.resize(static_cast<size_t>(n));
      return true;
    }
    // llama_vocab::impl::detokenize with the other setting: the pieces, less a BOS/EOS the
    // vocabulary adds (when asked) and the space prefix it adds to the text, then the clean-up.
    out.clear();
    if (llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_NONE) return true;
    size_t begin = 0;
    size_t end = tokens.size();
    bool removeSpace = vocab->get_add_space_prefix();
    if (removeSpecial && llama_vocab_get_add_bos(vocab) && end > 0 && tokens[0] == llama_vocab_bos(vocab)) {
      removeSpace = false;
      begin = 1;
    }
    if (removeSpecial && llama_vocab_get_add_eos(vocab) && end > begin && tokens[end - 1] == llama_vocab_eos(vocab)) {
      end--;
    }
    for (size_t i = begin; i < end; i++) {
      if (!AppendPiece(vocab, tokens[i], removeSpace ? 1 : 0, unparseSpecial, out)) return false;
      removeSpace = false;
    }
    if (out.size() > static_cast<size_t>(INT32_MAX)) return false;
    if (cleanSpaces) CleanSpaces(out);
    return true;
  } catch (const std::exception&) {
    out.clear();
    return false;
  }
}

// A persistent ggml CPU thread pool for a context (llama.cpp otherwise creates threads for
// every graph it computes). The ggml-cpu functions are looked up through the backend registry,
// so this works whether the CPU backend is linked in or loaded as a dynamic library.
class Threadpool {
 public:
  // A pool that starts paused wakes up when llama.cpp first computes with it (used when the
  // generation and batch pools differ, so that only one of them polls at a time).
  Threadpool(int32_t nThreads, bool paused) {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) return;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
    auto* create = reinterpret_cast<decltype(ggml_threadpool_new)*>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
    free_ = reinterpret_cast<decltype(ggml_threadpool_free)*>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
    if (create == nullptr || free_ == nullptr) return;
    ggml_threadpool_params params = ggml_threadpool_params_default(nThreads);
    params.paused = paused;
    pool_ = create(&params);
    pause_ = reinterpret_cast<decltype(ggml_threadpool_pause)*>(CpuBackendSymbol("ggml_threadpool_pause"));
  }
  // Stops the workers' polling: after a graph they spin for a while (ggml's poll level 50:
  // about 0.2 s of a core each) waiting for the next one, which takes those cores from anything
  // else (libmtmd's encoder, another context, the rest of the process). llama.cpp resumes the pool
  // at its next graph. For when the context goes idle or another computation comes next.
  void Pause() {
    if (pool_ != nullptr && pause_ != nullptr) pause_(pool_);
  }
  ~Threadpool() {
    if (pool_ != nullptr) free_(pool_);
  }
  Threadpool(const Threadpool&) = delete;
  Threadpool& operator=(const Threadpool&) = delete;

  ggml_threadpool_t get() const { return pool_; }

 private:
  ggml_threadpool_t pool_ = nullptr;
  decltype(ggml_threadpool_free)* free_ = nullptr;
  decltype(ggml_threadpool_pause)* pause_ = nullptr;
};

// Bytes a context holds for its KV cache and compute buffers, over every buffer type.
inline size_t ContextMemoryBytes(const llama_context* ctx) {
  size_t total = 0;
  for (const auto& [type, mb] : llama_get_memory_breakdown(ctx)) total += mb.context + mb.compute;
  return total;
}

// Positions a model can use: learned absolute positions (no RoPE) stop at the training context.
inline bool HasLearnedPositions(const llama_model* m) { return llama_model_rope_type(m) == LLAMA_ROPE_TYPE_NONE; }

// The model's default chat template (tokenizer.chat_template), "" when it has none.
inline std::string ModelChatTemplate(const llama_model* m) {
  const char* tmpl = llama_model_chat_template(m, nullptr);
  return tmpl == nullptr ? std::string() : std::string(tmpl);
}

// The names of llama.cpp's built-in chat templates ("chatml", "llama2", ...).
inline std::vector<std::string> ChatBuiltinTemplates() {
  const int32_t count = llama_chat_builtin_templates(nullptr, 0);
  std::vector<const char*> names(count > 0 ? static_cast<size_t>(count) : 0);
  const int32_t n = llama_chat_builtin_templates(names.data(), names.size());
  std::vector<std::string> out;
  for (int32_t i = 0; i < n && static_cast<size_t>(i) < names.size(); i++) out.emplace_back(names[i]);
  return out;
}

// Renders a chat with a built-in template (llama_chat_apply_template: no Jinja), named or
// recognised from the template text `tmpl`. False when llama.cpp does not recognise it.
inline bool ChatApplyBuiltin(const std::string& tmpl, const std::vector<std::string>& roles,
                             const std::vector<std::string>& contents, bool addAssistant, std::string& out) {
  std::vector<llama_chat_message> chat(roles.size());
  for (size_t i = 0; i < roles.size(); i++) chat[i] = {roles[i].c_str(), contents[i].c_str()};
  const int32_t n = llama_chat_apply_template(tmpl.c_str(), chat.data(), chat.size(), addAssistant, nullptr, 0);
  if (n < 0) return false;
  std::vector<char> buf(static_cast<size_t>(n) + 1, '\0');
  const int32_t m = llama_chat_apply_template(tmpl.c_str(), chat.data(), chat.size(), addAssistant, buf.data(),
                                              static_cast<int32_t>(buf.size()));
  if (m != n) return false;
  out.assign(buf.data(), static_cast<size_t>(n));
  return true;
}

}  // namespace llama_napi::compat
