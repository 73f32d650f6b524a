// libFuzzer target: the addon's model load path, through decode. The input is written to a file
// and goes where loadModel() sends a file: ReadGgufHeader, CheckLoadable and CheckTensorTypes
// (native/GgufCheck.cc, unchanged), then, for what they accept, llama_model_load_from_file as
// the load worker calls it, the vocabulary (tokenize / detokenize), and where createContext would
// make one (native/GraphCheck.cc: UnsupportedArchitecture, then UncomputableNode on the new
// context) a context that decodes a prompt and samples and decodes three more tokens.
#include <ggml-cpu.h>
#include <llama.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <vector>

#include "GgufCheck.h"
#include "GraphCheck.h"
#include "llama_compat.h"
#include "log.h"

namespace {

std::string g_path;

void UseModel(llama_model* model) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  // What the load worker refuses after llama.cpp's load (native/Model.cc).
  if (!llama_napi::UnusableVocabulary(model).empty() || !llama_napi::GraphBuilderProblem(model).empty()) return;
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
  if (tokens.empty() || !llama_napi::UnsupportedArchitecture(model, false).empty()) return;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 16;
  cp.n_batch = 16;
  cp.n_ubatch = 16;
  cp.n_threads = 1;
  cp.n_threads_batch = 1;
  cp.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) return;
  if (llama_napi::UncomputableNode(ctx).empty()) {
    if (tokens.size() > 4) tokens.resize(4);
    llama_batch batch = llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()));
    // Sample from whatever logits come out (NaN and infinities included) with the default chain.
    llama_sampler* chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(chain, llama_sampler_init_top_k(40));
    llama_sampler_chain_add(chain, llama_sampler_init_top_p(0.95f, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_min_p(0.05f, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(0.8f));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(1));
    for (int step = 0; step < 4 && llama_decode(ctx, batch) == 0; step++) {
      if (llama_get_logits_ith(ctx, -1) == nullptr) break;
      llama_token next = llama_sampler_sample(chain, ctx, -1);
      if (next < 0 || next >= nVocab) break;
      tokens.assign(1, next);
      batch = llama_batch_get_one(tokens.data(), 1);
    }
    llama_sampler_free(chain);
  }
  llama_free(ctx);
}

// native/GraphCheck.cc keeps a copy of ggml-cpu's type traits (a prebuilt addon cannot link
// ggml-cpu's C functions); this target links ggml-cpu, so it checks the copy once.
void CheckCpuTraitsCopy() {
  for (int t = 0; t < GGML_TYPE_COUNT; t++) {
    const auto type = static_cast<ggml_type>(t);
    const ggml_type_traits_cpu* real = ggml_get_type_traits_cpu(type);
    const llama_napi::CpuTypeTraits copy = llama_napi::CpuTraits(type);
    const bool vecDotMatches = (real->vec_dot != nullptr) == copy.vecDot && (!copy.vecDot || real->vec_dot_type == copy.vecDotType);
    if (!vecDotMatches || (real->from_float != nullptr) != copy.fromFloat) {
      std::fprintf(stderr, "native/GraphCheck.cc CpuTraits(%s) differs from ggml-cpu's type traits\n", ggml_type_name(type));
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llama_napi::InitLogging();
  llama_napi::SetLogLevel(5);  // quiet: failures are expected
  llama_backend_init();
  CheckCpuTraitsCopy();
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
  if (!llama_napi::CheckTensorTypes(header.get(), g_path).ok()) return 0;
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
