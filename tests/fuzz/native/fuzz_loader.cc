// libFuzzer target: the addon's model load path. The input is written to a file and goes where
// loadModel() sends a file: ReadGgufHeader and CheckLoadable (native/GgufCheck.cc, unchanged),
// then, for what they accept, llama_model_load_from_file as the load worker calls it, the
// vocabulary (tokenize / detokenize), and a context that decodes two tokens.
#include <llama.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <vector>

#include "GgufCheck.h"
#include "llama_compat.h"
#include "log.h"

namespace {

std::string g_path;

void UseModel(llama_model* model) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  char desc[128];
  llama_model_desc(model, desc, sizeof(desc));
  (void)llama_model_n_params(model);
  if (nVocab <= 0) return;
  const std::string text = "Hello world, <|endoftext|> 123";
  // Through the addon's wrappers (native/llama_compat.h), which turn llama.cpp's exceptions into
  // errors: called bare, an SPM vocabulary without byte tokens throws std::out_of_range.
  std::vector<llama_token> tokens;
  if (llama_napi::compat::Tokenize(vocab, text, true, true, tokens) != llama_napi::compat::TokenizeStatus::kOk) return;
  std::string out;
  // Both clean-up settings: one is llama_detokenize, the other the addon's loop over the pieces.
  (void)llama_napi::compat::Detokenize(vocab, tokens, false, true, false, out);
  (void)llama_napi::compat::Detokenize(vocab, tokens, true, true, true, out);
  for (llama_token t : tokens) (void)llama_napi::compat::TokenPiece(vocab, t, false);
  if (llama_model_has_encoder(model) || tokens.empty()) return;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 16;
  cp.n_batch = 16;
  cp.n_ubatch = 16;
  cp.n_threads = 1;
  cp.n_threads_batch = 1;
  cp.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) return;
  if (tokens.size() > 2) tokens.resize(2);
  llama_batch batch = llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()));
  if (llama_decode(ctx, batch) == 0) (void)llama_get_logits_ith(ctx, -1);
  llama_free(ctx);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llama_napi::InitLogging();
  llama_napi::SetLogLevel(5);  // quiet: failures are expected
  llama_backend_init();
  const char* dir = std::getenv("TMPDIR");
  g_path = std::string(dir != nullptr ? dir : "/tmp") + "/llama-napi-fuzz-loader-" + std::to_string(getpid()) + ".gguf";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FILE* f = std::fopen(g_path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  llama_napi::GgufPtr header;
  if (!llama_napi::ReadGgufHeader(g_path, header).ok()) return 0;
  if (!llama_napi::CheckLoadable(header.get(), g_path).ok()) return 0;
  header.reset();
  // As the load worker makes them (native/llama_compat.h), mapped or read (both ways).
  llama_model_params params = llama_napi::compat::ModelParams(size % 2 == 0, true, false);
  llama_model* model = llama_model_load_from_file(g_path.c_str(), params);
  if (model != nullptr) {
    UseModel(model);
    llama_model_free(model);
  }
  return 0;
}
