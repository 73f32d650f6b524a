// Embeddings (and reranking scores) for a context created with `embeddings: true`. Many texts
// are packed into one llama_decode batch, one sequence each, as llama.cpp's embedding tool does.
#include <cmath>
#include <cstdio>
#include <cstring>

#include "Engine.h"
#include "GgufCheck.h"
#include "GraphCheck.h"
#include "log.h"

namespace llama_napi {

Failure Engine::RunEmbed(const std::vector<std::vector<llama_token>>& texts, bool normalize, EmbedResult& out) {
  llama_context* ctx = ctx_.get();
  const llama_model* model = model_->model.get();
  const enum llama_pooling_type pooling = llama_pooling_type(ctx);
  out.pooling = pooling;
  out.dim = pooling == LLAMA_POOLING_TYPE_RANK ? static_cast<int32_t>(llama_model_n_cls_out(model))
                                               : llama_model_n_embd_out(model);
  out.vectors.assign(texts.size(), {});
  const bool encode = llama_model_has_encoder(model) && !llama_model_has_decoder(model);
  compat::Batch& batch = *batch_;

  size_t next = 0;
  while (next < texts.size()) {
    // Pack whole texts (a text never straddles two batches: non-causal models need it whole).
    batch.Clear();
    const size_t first = next;
    while (next < texts.size() && next - first < nSeq_ &&
           static_cast<size_t>(batch.Size()) + texts[next].size() <= static_cast<size_t>(batch.Capacity())) {
      const auto& tokens = texts[next];
      for (size_t i = 0; i < tokens.size(); i++) {
        batch.Add(tokens[i], static_cast<llama_pos>(i), static_cast<llama_seq_id>(next - first), true);
      }
      next++;
    }
    if (next == first) {
      return {"ERR_CONTEXT_FULL", "Text " + std::to_string(first) + " has " + std::to_string(texts[first].size()) +
                                      " tokens, more than the embedding context's batch (" + std::to_string(batch.Capacity()) +
                                      "); create it with a larger batchSize or shorten the text"};
    }
    if (llama_memory_t mem = compat::Memory(ctx)) llama_memory_clear(mem, true);
    const int32_t ret = encode ? llama_encode(ctx, batch.Get()) : llama_decode(ctx, batch.Get());
    stats_.decodeCalls++;
    stats_.tokensDecoded += static_cast<uint64_t>(batch.Size());
    if (ret != 0) return {"ERR_DECODE", "Computing embeddings failed (llama.cpp code " + std::to_string(ret) + ")"};

    int32_t row = 0;
    for (size_t t = first; t < next; t++) {
      std::vector<float>& v = out.vectors[t];
      const size_t n = texts[t].size();
      if (pooling == LLAMA_POOLING_TYPE_NONE) {
        // One vector per token, rows in order.
        v.resize(n * static_cast<size_t>(out.dim));
        for (size_t i = 0; i < n; i++, row++) {
          const float* e = llama_get_embeddings_ith(ctx, row);
          if (e == nullptr) return {"ERR_DECODE", "llama.cpp returned no token embedding"};
          std::memcpy(v.data() + i * static_cast<size_t>(out.dim), e, sizeof(float) * static_cast<size_t>(out.dim));
        }
      } else {
        const float* e = llama_get_embeddings_seq(ctx, static_cast<llama_seq_id>(t - first));
        if (e == nullptr) return {"ERR_DECODE", "llama.cpp returned no sequence embedding"};
        v.assign(e, e + out.dim);
        row += static_cast<int32_t>(n);
      }
      if (normalize && pooling != LLAMA_POOLING_TYPE_RANK) {
        // L2-normalise each vector (each token's, without pooling).
        for (size_t off = 0; off < v.size(); off += static_cast<size_t>(out.dim)) {
          double sum = 0;
          for (int32_t k = 0; k < out.dim; k++) sum += static_cast<double>(v[off + k]) * v[off + k];
          const double norm = std::sqrt(sum);
          if (norm > 0) {
            for (int32_t k = 0; k < out.dim; k++) v[off + k] = static_cast<float>(v[off + k] / norm);
          }
        }
      }
    }
  }
  return {};
}

}  // namespace llama_napi

namespace llama_napi {

Failure Engine::RunSetLora(const std::vector<std::pair<std::string, float>>& adapters) {
  std::vector<llama_adapter_lora*> handles;
  std::vector<float> scales;
  for (const auto& [path, scale] : adapters) {
    std::lock_guard<std::mutex> lk(model_->loraMu);
    llama_adapter_lora*& adapter = model_->loras[path];
    if (adapter == nullptr) {
      // The header of a file that opens is read (and its type fields checked) first, as for
      // models (GgufCheck.h); a missing file is llama.cpp's to report.
      if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
        std::fclose(f);
        GgufPtr header;
        Failure failure = ReadGgufHeader(path, header);
        if (failure.ok()) failure = CheckTensorTypes(header.get(), path);  // as for models (GgufCheck.h)
        if (!failure.ok()) {
          model_->loras.erase(path);
          return failure;
        }
      }
      LogCapture capture;
      adapter = llama_adapter_lora_init(model_->model.get(), path.c_str());
      if (adapter == nullptr) {
        model_->loras.erase(path);
        return {"ERR_MODEL_LOAD", "Could not load the LoRA adapter " + path + ": " + capture.Text()};
      }
    }
    handles.push_back(adapter);
    scales.push_back(scale);
  }
  if (llama_set_adapters_lora(ctx_.get(), handles.data(), handles.size(), scales.data()) != 0) {
    return {"ERR_STATE", "llama.cpp refused the LoRA adapters for this context"};
  }
  // The graph with the adapters must be one ggml can compute (native/GraphCheck.h): a tensor type
  // without a kernel would abort the process at the next decode. Otherwise the previous adapters
  // come back.
  const std::string problem = UncomputableNode(ctx_.get(), /*reserve=*/true);
  if (!problem.empty()) {
    llama_set_adapters_lora(ctx_.get(), loraHandles_.data(), loraHandles_.size(), loraScales_.data());
    std::string paths;
    for (const auto& [path, scale] : adapters) paths += (paths.empty() ? "" : ", ") + path;
    return {"ERR_UNSUPPORTED", "The LoRA adapters (" + paths + ") cannot be applied: " + problem +
                                   ". Decoding with them would abort the process; the context keeps its previous adapters."};
  }
  loraHandles_ = std::move(handles);
  loraScales_ = std::move(scales);
  return {};
}

}  // namespace llama_napi
