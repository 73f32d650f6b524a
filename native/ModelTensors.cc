#include "ModelTensors.h"

#include <gguf.h>

#include <cstdio>
#include <cstring>

namespace llama_napi {

ModelTensors::~ModelTensors() {
  if (gguf_ != nullptr) gguf_free(gguf_);
  if (meta_ != nullptr) ggml_free(meta_);
}

bool ModelTensors::OpenLocked(std::string& error) {
  if (gguf_ != nullptr) return true;
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/&meta_};
  gguf_ = gguf_init_from_file(path_.c_str(), params);
  if (gguf_ == nullptr) {
    error = "Cannot read the tensor table of " + path_;
    return false;
  }
  return true;
}

bool ModelTensors::ReadBytes(uint64_t offset, size_t size, void* dst, std::string& error) {
  FILE* f = std::fopen(path_.c_str(), "rb");
  if (f == nullptr) {
    error = "Cannot open " + path_;
    return false;
  }
  const bool ok = fseeko(f, static_cast<off_t>(offset), SEEK_SET) == 0 && std::fread(dst, 1, size, f) == size;
  std::fclose(f);
  if (!ok) error = "Cannot read " + std::to_string(size) + " bytes at offset " + std::to_string(offset) + " of " + path_;
  return ok;
}

bool ModelTensors::FindLocked(const std::string& name, TensorInfo& out, std::string& error) {
  if (!OpenLocked(error)) return false;
  const int64_t id = gguf_find_tensor(gguf_, name.c_str());
  ggml_tensor* t = id >= 0 ? ggml_get_tensor(meta_, name.c_str()) : nullptr;
  if (t == nullptr) {
    error = "The model has no tensor named " + name;
    return false;
  }
  out.name = name;
  out.type = t->type;
  out.ne.assign(t->ne, t->ne + ggml_n_dims(t));
  out.offset = gguf_get_data_offset(gguf_) + gguf_get_tensor_offset(gguf_, id);
  out.rowBytes = ggml_row_size(t->type, t->ne[0]);
  return true;
}

bool ModelTensors::Find(const std::string& name, TensorInfo& out, std::string& error) {
  std::lock_guard<std::mutex> lk(mu_);
  return FindLocked(name, out, error);
}

std::vector<TensorInfo> ModelTensors::List(std::string& error) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<TensorInfo> out;
  if (!OpenLocked(error)) return out;
  for (int64_t i = 0; i < gguf_get_n_tensors(gguf_); i++) {
    TensorInfo info;
    if (FindLocked(gguf_get_tensor_name(gguf_, i), info, error)) out.push_back(std::move(info));
  }
  return out;
}

bool ModelTensors::ReadRowsLocked(const TensorInfo& t, int64_t first, int64_t count, std::vector<float>& out,
                                  std::string& error) {
  const int64_t nRows = t.ne.size() > 1 ? t.ne[1] : 1;
  if (first < 0 || count < 0 || first + count > nRows) {
    error = "Rows " + std::to_string(first) + ".." + std::to_string(first + count - 1) + " are outside " + t.name +
            " (which has " + std::to_string(nRows) + " rows)";
    return false;
  }
  const auto* traits = ggml_get_type_traits(t.type);
  if (t.type != GGML_TYPE_F32 && (traits == nullptr || traits->to_float == nullptr)) {
    error = "Cannot convert tensor type " + std::string(ggml_type_name(t.type)) + " to float";
    return false;
  }
  std::vector<uint8_t> raw(t.rowBytes * static_cast<size_t>(count));
  if (!ReadBytes(t.offset + t.rowBytes * static_cast<uint64_t>(first), raw.size(), raw.data(), error)) return false;
  out.resize(static_cast<size_t>(t.ne[0] * count));
  if (t.type == GGML_TYPE_F32) {
    std::memcpy(out.data(), raw.data(), raw.size());
  } else {
    traits->to_float(raw.data(), out.data(), t.ne[0] * count);
  }
  return true;
}

bool ModelTensors::ReadRows(const std::string& name, int64_t first, int64_t count, std::vector<float>& out,
                            std::string& error) {
  std::lock_guard<std::mutex> lk(mu_);
  TensorInfo t;
  return FindLocked(name, t, error) && ReadRowsLocked(t, first, count, out, error);
}

const OutputHead* ModelTensors::Head(std::string& error) {
  std::lock_guard<std::mutex> lk(mu_);
  if (head_) return head_.get();
  auto head = std::make_unique<OutputHead>();
  TensorInfo norm;
  std::string ignored;
  // An encoder-decoder model's head follows the decoder's final norm (T5: dec.output_norm).
  const std::string prefix = FindLocked("dec.output_norm.weight", norm, ignored) ? "dec." : "";
  if (!FindLocked(prefix + "output_norm.weight", norm, error) || !ReadRowsLocked(norm, 0, 1, head->normWeight, error)) return nullptr;
  TensorInfo bias;
  head->rmsNorm = !FindLocked(prefix + "output_norm.bias", bias, ignored);
  if (!head->rmsNorm && !ReadRowsLocked(bias, 0, 1, head->normBias, error)) return nullptr;
  // The epsilon is stored per architecture: <arch>.attention.layer_norm[_rms]_epsilon.
  const int64_t archKey = gguf_find_key(gguf_, "general.architecture");
  const std::string arch = archKey >= 0 ? gguf_get_val_str(gguf_, archKey) : "";
  const std::string epsKey = arch + (head->rmsNorm ? ".attention.layer_norm_rms_epsilon" : ".attention.layer_norm_epsilon");
  const int64_t eps = gguf_find_key(gguf_, epsKey.c_str());
  if (eps >= 0 && gguf_get_kv_type(gguf_, eps) == GGUF_TYPE_FLOAT32) head->eps = gguf_get_val_f32(gguf_, eps);
  if (!FindLocked("output.weight", head->output, ignored) && !FindLocked("token_embd.weight", head->output, error)) return nullptr;
  head->outputData.resize(head->output.rowBytes * static_cast<size_t>(head->output.ne[1]));
  if (!ReadBytes(head->output.offset, head->outputData.size(), head->outputData.data(), error)) return nullptr;
  head_ = std::move(head);
  return head_.get();
}

}  // namespace llama_napi
