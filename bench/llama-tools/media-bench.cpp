// media-bench: the raw llama.cpp side of the "media" suite. llama-mtmd-cli's flow (libmtmd:
// mtmd_init_from_file, mtmd_helper_bitmap_init_from_file, mtmd_tokenize, then each chunk through
// mtmd_helper_eval_chunk_single), repeated in one process so that each figure is a median:
//   encode_ms  the media item alone, as llama-napi's model.encodeMedia(): the file decoded,
//              preprocessed (mtmd_tokenize) and encoded (mtmd_encode_chunk; llama-mtmd-cli logs
//              the last step alone as "mtmd batch encoding done");
//   ttft_ms    from reading the media file and tokenizing the prompt (text and media) on an empty
//              cache to the first greedy token: every chunk encoded and decoded, the logits of
//              the last position sampled.
// One warm-up round first (the workers do the same).
//
//   media-bench -m MODEL --mmproj PROJECTOR (--image FILE | --audio FILE) -p PROMPT [-t 2] [-c 2048] [-r 5]
//               [--embd-out FILE]
//
// --embd-out writes the media chunk's embedding (mtmd_get_output_embd after the last round's
// mtmd_encode_chunk: n_tokens x n_embd float32, little-endian) for tests/media-oracle.test.ts.
// The prompt holds the media marker (mtmd_default_marker()) where the media goes. Prints one JSON
// object: the per-round timings in ms and the number of positions the prompt took.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "media-bench: %s\n", message.c_str());
  std::exit(1);
}

struct Options {
  std::string model, projector, media, prompt, embd_out;
  int threads = 2, n_ctx = 2048, rounds = 5;
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
    else if (a == "--mmproj") o.projector = value();
    else if (a == "--image" || a == "--audio") o.media = value();
    else if (a == "-p") o.prompt = value();
    else if (a == "-t") o.threads = std::atoi(value().c_str());
    else if (a == "-c") o.n_ctx = std::atoi(value().c_str());
    else if (a == "-r") o.rounds = std::atoi(value().c_str());
    else if (a == "--embd-out") o.embd_out = value();
    else fail("unknown argument " + a);
  }
  if (o.model.empty() || o.projector.empty() || o.media.empty() || o.prompt.empty()) fail("usage: media-bench -m MODEL --mmproj PROJ --image FILE -p PROMPT");
  if (o.rounds < 1) fail("-r must be at least 1");
  return o;
}

std::string json_list(const std::vector<double>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); i++) out += (i > 0 ? "," : "") + std::to_string(values[i]);
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  llama_log_set(quiet_log, nullptr);
  mtmd_helper_log_set(quiet_log, nullptr);
  llama_backend_init();

  llama_model* model = llama_model_load_from_file(o.model.c_str(), llama_model_default_params());
  if (model == nullptr) fail("cannot load " + o.model);
  llama_context_params cparams = llama_context_default_params();
  cparams.n_ctx = static_cast<uint32_t>(o.n_ctx);
  cparams.n_seq_max = 1;
  cparams.n_threads = cparams.n_threads_batch = o.threads;
  cparams.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cparams);
  if (ctx == nullptr) fail("cannot create a context");

  mtmd_context_params mparams = mtmd_context_params_default();
  mparams.print_timings = false;
  mparams.n_threads = o.threads;
  mtmd_context* mctx = mtmd_init_from_file(o.projector.c_str(), model, mparams);
  if (mctx == nullptr) fail("cannot load the projector " + o.projector);

  const int n_batch = static_cast<int>(llama_n_batch(ctx));
  const llama_vocab* vocab = llama_model_get_vocab(model);
  std::vector<double> encode_ms, ttft_ms;
  size_t positions = 0;
  for (int round = 0; round <= o.rounds; round++) {  // round 0 warms up
    llama_memory_clear(llama_get_memory(ctx), true);
    const auto start = Clock::now();
    // The file decoded in each round, as llama-mtmd-cli does for each message (and llama-napi for each prompt).
    mtmd_bitmap* bitmap = mtmd_helper_bitmap_init_from_file(mctx, o.media.c_str(), false, mtmd_helper_init_opt_default()).bitmap;
    if (bitmap == nullptr) fail("cannot read " + o.media);
    mtmd_input_chunks* chunks = mtmd_input_chunks_init();
    mtmd_input_text text{o.prompt.c_str(), o.prompt.size(), true, true};
    const mtmd_bitmap* media[] = {bitmap};
    if (mtmd_tokenize(mctx, chunks, &text, media, 1) != 0) fail("mtmd_tokenize failed (is the marker in the prompt?)");
    llama_pos n_past = 0;
    const size_t n_chunks = mtmd_input_chunks_size(chunks);
    for (size_t i = 0; i < n_chunks; i++) {
      if (mtmd_helper_eval_chunk_single(mctx, ctx, mtmd_input_chunks_get(chunks, i), n_past, 0, n_batch, i == n_chunks - 1, &n_past) != 0) {
        fail("mtmd_helper_eval_chunk_single failed");
      }
    }
    const float* logits = llama_get_logits_ith(ctx, -1);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const llama_token first = static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits);
    const double ttft = ms_since(start);
    (void)first;
    positions = static_cast<size_t>(n_past);

    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bitmap);

    // The media item alone, as llama-napi's encodeMedia: the file decoded and preprocessed
    // (mtmd_tokenize: the resize, or the mel spectrogram) and encoded.
    const auto t = Clock::now();
    bitmap = mtmd_helper_bitmap_init_from_file(mctx, o.media.c_str(), false, mtmd_helper_init_opt_default()).bitmap;
    if (bitmap == nullptr) fail("cannot read " + o.media);
    chunks = mtmd_input_chunks_init();
    mtmd_input_text marker{mtmd_default_marker(), std::strlen(mtmd_default_marker()), false, false};
    media[0] = bitmap;
    if (mtmd_tokenize(mctx, chunks, &marker, media, 1) != 0) fail("mtmd_tokenize failed");
    double encode = 0;
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
      const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks, i);
      if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) continue;
      if (mtmd_encode_chunk(mctx, chunk) != 0) fail("mtmd_encode_chunk failed");
      encode = ms_since(t);
      if (!o.embd_out.empty() && round == o.rounds) {
        const size_t n = mtmd_input_chunk_get_n_tokens(chunk) * static_cast<size_t>(llama_model_n_embd_inp(model));
        std::FILE* out = std::fopen(o.embd_out.c_str(), "wb");
        if (out == nullptr || std::fwrite(mtmd_get_output_embd(mctx), sizeof(float), n, out) != n || std::fclose(out) != 0) fail("cannot write " + o.embd_out);
      }
    }
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bitmap);
    if (round > 0) {
      ttft_ms.push_back(ttft);
      encode_ms.push_back(encode);
    }
  }
  std::printf("{\"encode_ms\":%s,\"ttft_ms\":%s,\"positions\":%zu,\"threads\":%d}\n", json_list(encode_ms).c_str(), json_list(ttft_ms).c_str(),
              positions, o.threads);
  mtmd_free(mctx);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
