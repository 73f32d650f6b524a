// tokenize-bench: llama.cpp's own tokenizer speed on a text file, for `npm run bench` (suite
// "tokenize"). Loads only the vocabulary of a GGUF model, then times llama_tokenize over the whole
// file REPS times (add_special = true, parse_special = false: the defaults of model.tokenize).
//
//   tokenize-bench MODEL.gguf TEXT_FILE [REPS]
//
// Prints one JSON object: {"bytes", "tokens", "times_ms": [...], "median_ms", "median_mb_s"}.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

static void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf TEXT_FILE [REPS]\n", argv[0]);
    return 2;
  }
  const char* model_path = argv[1];
  const char* text_path = argv[2];
  const int reps = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;

  std::ifstream in(text_path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", text_path);
    return 1;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params mparams = llama_model_default_params();
  mparams.vocab_only = true;
  llama_model* model = llama_model_load_from_file(model_path, mparams);
  if (model == nullptr) {
    std::fprintf(stderr, "cannot load the vocabulary of %s\n", model_path);
    return 1;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);

  // A token is at least one byte, so text.size() + 2 (BOS/EOS) always fits: one call per run.
  std::vector<llama_token> tokens(text.size() + 2);
  std::vector<double> times;
  int32_t n_tokens = 0;
  for (int r = 0; r < reps; r++) {
    const auto start = std::chrono::steady_clock::now();
    n_tokens = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                              static_cast<int32_t>(tokens.size()), true, false);
    const auto end = std::chrono::steady_clock::now();
    if (n_tokens < 0) {
      std::fprintf(stderr, "llama_tokenize failed (%d)\n", n_tokens);
      return 1;
    }
    times.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }

  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;

  std::printf("{\"bytes\": %zu, \"tokens\": %d, \"times_ms\": [", text.size(), n_tokens);
  for (size_t i = 0; i < times.size(); i++) std::printf("%s%.4f", i ? ", " : "", times[i]);
  std::printf("], \"median_ms\": %.4f, \"median_mb_s\": %.4f}\n", median, text.size() / 1e6 / (median / 1e3));

  llama_model_free(model);
  llama_backend_free();
  return 0;
}
