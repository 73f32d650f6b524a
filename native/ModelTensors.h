// Read access to a model's tensors straight from its GGUF file (public gguf/ggml API only):
// rows of the embedding tables for the learner, and the final norm and unembedding for the
// logit lens. Opened lazily; safe to use from any thread.
#pragma once

#include <ggml.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct gguf_context;

namespace llama_napi {

struct TensorInfo {
  std::string name;
  ggml_type type = GGML_TYPE_F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row length
  uint64_t offset = 0;      // absolute file offset of the data
  size_t rowBytes = 0;
};

// The final normalisation and the unembedding of a model (for the logit lens).
struct OutputHead {
  bool rmsNorm = false;            // RMSNorm (Llama and friends) or LayerNorm (GPT-2, BERT)
  float eps = 1e-5f;
  std::vector<float> normWeight;   // n_embd
  std::vector<float> normBias;     // n_embd, empty for RMSNorm
  TensorInfo output;               // output.weight, or token_embd.weight when tied
  std::vector<uint8_t> outputData; // its raw bytes, in its own (possibly quantised) type
};

class ModelTensors {
 public:
  explicit ModelTensors(std::string path) : path_(std::move(path)) {}
  ~ModelTensors();

  // Returns false (and sets `error`) when the file cannot be read or has no such tensor.
  bool Find(const std::string& name, TensorInfo& out, std::string& error);
  // Rows [first, first + count) of a 2-D tensor, dequantised to float.
  bool ReadRows(const std::string& name, int64_t first, int64_t count, std::vector<float>& out, std::string& error);
  // The final norm and unembedding (loaded once, then cached).
  const OutputHead* Head(std::string& error);
  std::vector<TensorInfo> List(std::string& error);

 private:
  bool OpenLocked(std::string& error);
  bool ReadBytes(uint64_t offset, size_t size, void* dst, std::string& error);
  bool FindLocked(const std::string& name, TensorInfo& out, std::string& error);
  bool ReadRowsLocked(const TensorInfo& t, int64_t first, int64_t count, std::vector<float>& out, std::string& error);

  std::string path_;
  std::mutex mu_;
  gguf_context* gguf_ = nullptr;
  ggml_context* meta_ = nullptr;
  std::unique_ptr<OutputHead> head_;
};

}  // namespace llama_napi
