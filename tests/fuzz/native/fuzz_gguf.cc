// libFuzzer target: ggml's GGUF reader. The input is read as a file (gguf_init_from_file_ptr over
// fmemopen, the reader the addon and llama.cpp use through gguf_init_from_file), and everything
// it accepted is then walked: keys, values, arrays (strings included) and the tensor table.
#include <gguf.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

volatile size_t g_sink = 0;  // keeps the reads from being optimised away

void Walk(const gguf_context* g) {
  size_t sum = gguf_get_version(g) + gguf_get_alignment(g) + gguf_get_data_offset(g);
  const int64_t nKv = gguf_get_n_kv(g);
  for (int64_t id = 0; id < nKv; id++) {
    sum += std::strlen(gguf_get_key(g, id));
    const gguf_type type = gguf_get_kv_type(g, id);
    if (gguf_find_key(g, gguf_get_key(g, id)) < 0) __builtin_trap();  // every key can be found
    switch (type) {
      case GGUF_TYPE_STRING: sum += std::strlen(gguf_get_val_str(g, id)); break;
      case GGUF_TYPE_ARRAY: {
        const gguf_type at = gguf_get_arr_type(g, id);
        const size_t n = gguf_get_arr_n(g, id);
        if (at == GGUF_TYPE_STRING) {
          for (size_t i = 0; i < n; i++) sum += std::strlen(gguf_get_arr_str(g, id, i));
        } else if (at != GGUF_TYPE_ARRAY && n > 0) {
          const auto* bytes = static_cast<const uint8_t*>(gguf_get_arr_data(g, id));
          const size_t width = gguf_type_size(at);
          for (size_t i = 0; i < n; i++) sum += bytes[i * width];
        }
        break;
      }
      case GGUF_TYPE_UINT8: sum += gguf_get_val_u8(g, id); break;
      case GGUF_TYPE_INT8: sum += static_cast<size_t>(gguf_get_val_i8(g, id)); break;
      case GGUF_TYPE_UINT16: sum += gguf_get_val_u16(g, id); break;
      case GGUF_TYPE_INT16: sum += static_cast<size_t>(gguf_get_val_i16(g, id)); break;
      case GGUF_TYPE_UINT32: sum += gguf_get_val_u32(g, id); break;
      case GGUF_TYPE_INT32: sum += static_cast<size_t>(gguf_get_val_i32(g, id)); break;
      case GGUF_TYPE_UINT64: sum += gguf_get_val_u64(g, id); break;
      case GGUF_TYPE_INT64: sum += static_cast<size_t>(gguf_get_val_i64(g, id)); break;
      case GGUF_TYPE_FLOAT32: sum += gguf_get_val_f32(g, id) > 0; break;
      case GGUF_TYPE_FLOAT64: sum += gguf_get_val_f64(g, id) > 0; break;
      case GGUF_TYPE_BOOL: sum += gguf_get_val_bool(g, id); break;
      default: break;
    }
  }
  const int64_t nTensors = gguf_get_n_tensors(g);
  for (int64_t i = 0; i < nTensors; i++) {
    const char* name = gguf_get_tensor_name(g, i);
    sum += std::strlen(name) + gguf_get_tensor_offset(g, i) + gguf_get_tensor_size(g, i) + gguf_get_tensor_type(g, i);
    if (gguf_find_tensor(g, name) < 0) __builtin_trap();
  }
  // The header as the writer would produce it again.
  sum += gguf_get_meta_size(g);
  g_sink = g_sink + sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  FILE* f = fmemopen(const_cast<uint8_t*>(data), size, "rb");
  if (f == nullptr) return 0;
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* g = gguf_init_from_file_ptr(f, params);
  std::fclose(f);
  if (g != nullptr) {
    Walk(g);
    gguf_free(g);
  }
  // The in-memory reader must agree with the file reader on what is valid.
  gguf_context* b = gguf_init_from_buffer(data, size, params);
  if ((b != nullptr) != (g != nullptr)) __builtin_trap();
  if (b != nullptr) gguf_free(b);
  return 0;
}
