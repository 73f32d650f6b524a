// libFuzzer target: the GGUF header as the addon reads it. The input is written to a file and
// read with ReadGgufHeader (native/GgufCheck.cc, unchanged: its scan of the type fields, then
// ggml's gguf_init_from_file), and everything accepted is walked: keys, values, arrays (strings
// included) and the tensor table; CheckLoadable runs on it as the load worker runs it.
#include <gguf.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "GgufCheck.h"
#include "log.h"

namespace {

std::string g_path;
volatile size_t g_sink = 0;  // keeps the reads from being optimised away

size_t Width(gguf_type t) {
  switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
  }
}

void Walk(const gguf_context* g) {
  size_t sum = gguf_get_version(g) + gguf_get_alignment(g) + gguf_get_data_offset(g);
  const int64_t nKv = gguf_get_n_kv(g);
  for (int64_t id = 0; id < nKv; id++) {
    sum += std::strlen(gguf_get_key(g, id));
    if (gguf_find_key(g, gguf_get_key(g, id)) < 0) __builtin_trap();  // every key can be found
    const gguf_type type = gguf_get_kv_type(g, id);
    if (type == GGUF_TYPE_STRING) {
      sum += std::strlen(gguf_get_val_str(g, id));
    } else if (type == GGUF_TYPE_ARRAY) {
      const gguf_type at = gguf_get_arr_type(g, id);
      const size_t n = gguf_get_arr_n(g, id);
      if (at == GGUF_TYPE_STRING) {
        for (size_t i = 0; i < n; i++) sum += std::strlen(gguf_get_arr_str(g, id, i));
      } else if (Width(at) > 0 && n > 0) {
        const auto* bytes = static_cast<const uint8_t*>(gguf_get_arr_data(g, id));
        for (size_t i = 0; i < n; i++) sum += bytes[i * Width(at)];
      }
    } else if (Width(type) > 0) {
      const auto* bytes = static_cast<const uint8_t*>(gguf_get_val_data(g, id));
      sum += bytes[0];
    }
  }
  const int64_t nTensors = gguf_get_n_tensors(g);
  for (int64_t i = 0; i < nTensors; i++) {
    const char* name = gguf_get_tensor_name(g, i);
    sum += std::strlen(name) + gguf_get_tensor_offset(g, i) + gguf_get_tensor_size(g, i) + gguf_get_tensor_type(g, i);
    if (gguf_find_tensor(g, name) < 0) __builtin_trap();
  }
  sum += gguf_get_meta_size(g);  // the header as the writer would produce it again
  g_sink = g_sink + sum;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llama_napi::InitLogging();
  llama_napi::SetLogLevel(5);  // quiet: failures are expected
  const char* dir = std::getenv("TMPDIR");
  g_path = std::string(dir != nullptr ? dir : "/tmp") + "/llama-napi-fuzz-gguf-" + std::to_string(getpid()) + ".gguf";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FILE* f = std::fopen(g_path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  llama_napi::GgufPtr header;
  if (!llama_napi::ReadGgufHeader(g_path, header).ok()) return 0;
  Walk(header.get());
  (void)llama_napi::CheckLoadable(header.get(), g_path);
  return 0;
}
