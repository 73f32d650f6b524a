// load-bench: the raw llama.cpp side of the "speed" suite's load time, time to first token and
// peak memory. In one fresh process it does what the llama-napi child does: loads the model
// (timed: llama_model_load_from_file), creates a context with the same settings, evaluates a
// text prompt, samples greedily and generates N tokens, then reports its peak RSS. Like the
// workers, it warms up (prompt and a few tokens, then a cleared cache) before the timed run.
//
//   load-bench -m MODEL -f PROMPT_FILE [-n 64] [-t 2] [-c 192] [-b 512] [-fa auto|on|off]
//              [-ctk f16] [--no-mmap]
//
// Prints one JSON object. Timings in ms; ttft_ms runs from before tokenizing the prompt to the
// first sampled token; gen_ms from the first to the last token (n_gen - 1 decodes).

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "load-bench: %s\n", message.c_str());
  std::exit(1);
}

ggml_type kv_type(const std::string& name) {
  if (name == "f16") return GGML_TYPE_F16;
  if (name == "f32") return GGML_TYPE_F32;
  if (name == "bf16") return GGML_TYPE_BF16;
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  if (name == "q4_0") return GGML_TYPE_Q4_0;
  fail("unsupported -ctk " + name);
}

struct Options {
  std::string model, prompt_file, flash = "auto", kv = "f16";
  int n_gen = 64, threads = 2, n_ctx = 192, n_batch = 512;
  bool mmap = true;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("missing value after " + a);
      return argv[++i];
    };
    if (a == "-m") o.model = value();
    else if (a == "-f") o.prompt_file = value();
    else if (a == "-n") o.n_gen = std::atoi(value().c_str());
    else if (a == "-t") o.threads = std::atoi(value().c_str());
    else if (a == "-c") o.n_ctx = std::atoi(value().c_str());
    else if (a == "-b") o.n_batch = std::atoi(value().c_str());
    else if (a == "-fa") o.flash = value();
    else if (a == "-ctk") o.kv = value();
    else if (a == "--no-mmap") o.mmap = false;
    else fail("unknown argument " + a);
  }
  if (o.model.empty() || o.prompt_file.empty()) fail("usage: load-bench -m MODEL -f PROMPT_FILE [options]");
  if (o.n_gen < 1) fail("-n must be at least 1");
  return o;
}

bool decode(llama_context* ctx, std::vector<llama_token>& tokens, int n_batch) {
  for (size_t i = 0; i < tokens.size(); i += static_cast<size_t>(n_batch)) {
    const int32_t n = static_cast<int32_t>(std::min(tokens.size() - i, static_cast<size_t>(n_batch)));
    if (llama_decode(ctx, llama_batch_get_one(tokens.data() + i, n)) != 0) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  std::ifstream in(o.prompt_file, std::ios::binary);
  if (!in) fail("cannot read " + o.prompt_file);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string prompt = buffer.str();

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();

  llama_model_params mparams = llama_model_default_params();
  mparams.load_mode = o.mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  const auto load_start = Clock::now();
  llama_model* model = llama_model_load_from_file(o.model.c_str(), mparams);
  const double load_ms = ms_since(load_start);
  if (model == nullptr) fail("cannot load " + o.model);

  llama_context_params cparams = llama_context_default_params();
  cparams.n_ctx = static_cast<uint32_t>(o.n_ctx);
  cparams.n_batch = cparams.n_ubatch = static_cast<uint32_t>(o.n_batch);
  cparams.n_seq_max = 1;
  cparams.n_threads = cparams.n_threads_batch = o.threads;
  cparams.type_k = cparams.type_v = kv_type(o.kv);
  cparams.flash_attn_type = o.flash == "on"    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                            : o.flash == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                               : LLAMA_FLASH_ATTN_TYPE_AUTO;
  cparams.no_perf = true;
  const auto ctx_start = Clock::now();
  llama_context* ctx = llama_init_from_model(model, cparams);
  const double context_ms = ms_since(ctx_start);
  if (ctx == nullptr) fail("cannot create the context");

  const llama_vocab* vocab = llama_model_get_vocab(model);
  llama_sampler* sampler = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(sampler, llama_sampler_init_greedy());

  // Warm-up, as llama-bench and the two Node workers do: the prompt and a few tokens, then a clean cache.
  {
    std::vector<llama_token> warm(prompt.size() + 2);
    const int32_t n = llama_tokenize(vocab, prompt.data(), static_cast<int32_t>(prompt.size()), warm.data(),
                                     static_cast<int32_t>(warm.size()), true, false);
    if (n <= 0) fail("the prompt has no tokens");
    warm.resize(static_cast<size_t>(n));
    if (!decode(ctx, warm, o.n_batch)) fail("llama_decode failed on the warm-up prompt");
    for (int i = 0; i < 3; i++) {
      std::vector<llama_token> one{llama_sampler_sample(sampler, ctx, -1)};
      if (!decode(ctx, one, o.n_batch)) fail("llama_decode failed while warming up");
    }
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_sampler_reset(sampler);
  }

  const auto prompt_start = Clock::now();
  std::vector<llama_token> tokens(prompt.size() + 2);
  const int32_t n_prompt = llama_tokenize(vocab, prompt.data(), static_cast<int32_t>(prompt.size()), tokens.data(),
                                          static_cast<int32_t>(tokens.size()), true, false);
  if (n_prompt <= 0) fail("the prompt has no tokens");
  tokens.resize(static_cast<size_t>(n_prompt));
  if (!decode(ctx, tokens, o.n_batch)) fail("llama_decode failed on the prompt");
  llama_token token = llama_sampler_sample(sampler, ctx, -1);
  const double ttft_ms = ms_since(prompt_start);

  const auto gen_start = Clock::now();
  for (int i = 1; i < o.n_gen; i++) {
    std::vector<llama_token> one{token};
    if (!decode(ctx, one, o.n_batch)) fail("llama_decode failed while generating");
    token = llama_sampler_sample(sampler, ctx, -1);
  }
  const double gen_ms = ms_since(gen_start);

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "{\"load_ms\": %.3f, \"context_ms\": %.3f, \"prompt_tokens\": %d, \"ttft_ms\": %.3f, \"gen_tokens\": %d, "
      "\"gen_ms\": %.3f, \"gen_tokens_per_s\": %.3f, \"max_rss_kb\": %ld}\n",
      load_ms, context_ms, n_prompt, ttft_ms, o.n_gen, gen_ms, o.n_gen > 1 ? (o.n_gen - 1) / (gen_ms / 1e3) : 0.0,
      usage.ru_maxrss);

  llama_sampler_free(sampler);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
