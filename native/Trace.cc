#include "Trace.h"

#include <ggml-alloc.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace llama_napi {
namespace {

// "kq_soft_max-12" → ("kq_soft_max", 12); -1 when there is no layer suffix.
int32_t LayerOf(const char* name, const char* prefix) {
  const size_t n = std::strlen(prefix);
  if (std::strncmp(name, prefix, n) != 0 || name[n] != '-') return -1;
  char* end = nullptr;
  const long layer = std::strtol(name + n + 1, &end, 10);
  return end != name + n + 1 && *end == '\0' ? static_cast<int32_t>(layer) : -1;
}

// out[nRows × nOut] = W[nOut × nIn] · x[nRows × nIn], on a CPU backend instance (through the
// backend registry, so it also works when the CPU backend is a dynamically loaded library).
bool CpuMatMul(ggml_type wType, const std::vector<uint8_t>& w, int64_t nIn, int64_t nOut, const std::vector<float>& x,
               size_t nRows, int32_t threads, std::vector<float>& out, std::string& error) {
  ggml_backend_t cpu = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
  if (cpu == nullptr) {
    error = "no CPU backend";
    return false;
  }
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu));
  if (auto* setThreads = reinterpret_cast<ggml_backend_set_n_threads_t>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads"))) {
    setThreads(cpu, std::max(1, threads));
  }
  ggml_init_params params{ggml_tensor_overhead() * 4 + ggml_graph_overhead(), nullptr, /*no_alloc=*/true};
  ggml_context* ctx = ggml_init(params);
  ggml_tensor* wt = ggml_new_tensor_2d(ctx, wType, nIn, nOut);
  ggml_tensor* xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, nIn, static_cast<int64_t>(nRows));
  ggml_tensor* yt = ggml_mul_mat(ctx, wt, xt);
  ggml_cgraph* graph = ggml_new_graph(ctx);
  ggml_build_forward_expand(graph, yt);
  ggml_backend_buffer_t buffer = ggml_backend_alloc_ctx_tensors(ctx, cpu);
  bool ok = buffer != nullptr;
  if (ok) {
    ggml_backend_tensor_set(wt, w.data(), 0, std::min(w.size(), ggml_nbytes(wt)));
    ggml_backend_tensor_set(xt, x.data(), 0, ggml_nbytes(xt));
    ok = ggml_backend_graph_compute(cpu, graph) == GGML_STATUS_SUCCESS;
    if (ok) ggml_backend_tensor_get(yt, out.data(), 0, ggml_nbytes(yt));
  }
  if (buffer != nullptr) ggml_backend_buffer_free(buffer);
  ggml_free(ctx);
  ggml_backend_free(cpu);
  if (!ok) error = "the logit lens computation failed (out of memory?)";
  return ok;
}

}  // namespace

void TraceCapture::Begin(const TraceRequest& req, TraceResult* out, size_t firstNew, size_t nKvTotal) {
  req_ = req;
  out_ = out;
  encoderPass_ = false;
  firstNew_ = firstNew;
  nNew_ = nKvTotal - firstNew;
  nKvTotal_ = nKvTotal;
  const size_t nNew = nNew_;
  chunkStart_ = 0;
  const size_t nLayers = out->layers.size();
  selfDone_.assign(nLayers, false);
  if (req.attention) {
    out->attention.assign(nLayers, std::vector<float>(static_cast<size_t>(out->nHead) * nNew * nKvTotal, 0.0f));
    if (!out->encoderTokens.empty()) {
      out->crossAttention.assign(nLayers, std::vector<float>(static_cast<size_t>(out->nHead) * nNew * out->encoderTokens.size(), 0.0f));
    }
  }
  if (req.hidden || req.lensTopK > 0) {
    out->hidden.assign(nLayers, std::vector<float>(nNew * static_cast<size_t>(out->nEmbd), 0.0f));
  }
}

void TraceCapture::BeginEncoder(const TraceRequest& req, TraceResult* out) {
  req_ = req;
  out_ = out;
  encoderPass_ = true;
  chunkStart_ = 0;
  const size_t nEnc = out->encoderTokens.size();
  if (req.attention) {
    out->encoderAttention.assign(out->encoderLayers.size(), std::vector<float>(static_cast<size_t>(out->nHead) * nEnc * nEnc, 0.0f));
  }
}

int32_t TraceCapture::SlotOf(int32_t layer) const {
  const std::vector<int32_t>& layers = encoderPass_ ? out_->encoderLayers : out_->layers;
  auto it = std::find(layers.begin(), layers.end(), layer);
  return it == layers.end() ? -1 : static_cast<int32_t>(it - layers.begin());
}

bool TraceCapture::Wanted(const ggml_tensor* t, Kind* kind, int32_t* slot) const {
  if (out_ == nullptr) return false;
  int32_t layer = req_.attention ? LayerOf(t->name, "kq_soft_max") : -1;
  *kind = Kind::Attention;
  if (layer < 0 && !encoderPass_ && (req_.hidden || req_.lensTopK > 0)) {
    layer = LayerOf(t->name, "l_out");
    // T5's decoder graph names its last layer's output again, "result_embd" (src/models/t5.cpp).
    if (layer < 0 && !out_->encoderTokens.empty() && std::strcmp(t->name, "result_embd") == 0) layer = out_->nLayer - 1;
    *kind = Kind::Hidden;
  }
  if (layer < 0) return false;
  *slot = SlotOf(layer);
  return *slot >= 0;
}

bool TraceCapture::Callback(ggml_tensor* t, bool ask, void* userData) {
  auto* self = static_cast<TraceCapture*>(userData);
  Kind kind = Kind::Attention;
  int32_t slot = -1;
  const bool wanted = self->Wanted(t, &kind, &slot);
  if (ask) return wanted;
  if (wanted) self->Copy(t, kind, slot);
  return true;
}

void TraceCapture::CopyAttention(const ggml_tensor* t, std::vector<float>& dst, size_t firstQuery, size_t nQuery, size_t nKeys) {
  // [n_kv cells, n_tokens, n_head]: in a fresh single-sequence cache, cell i holds position i
  // (the encoder's and the cross-attention's keys are the encoder's positions).
  const int64_t nKvCells = t->ne[0], nTok = t->ne[1], nHead = t->ne[2];
  const size_t cols = std::min<size_t>(nKeys, static_cast<size_t>(nKvCells));
  for (int64_t i = 0; i < nTok; i++) {
    const size_t token = chunkStart_ + static_cast<size_t>(i);
    if (token < firstQuery || token >= firstQuery + nQuery) continue;
    for (int64_t h = 0; h < nHead && h < out_->nHead; h++) {
      const float* src = scratch_.data() + (h * nTok + i) * nKvCells;
      float* row = dst.data() + (static_cast<size_t>(h) * nQuery + (token - firstQuery)) * nKeys;
      std::memcpy(row, src, cols * sizeof(float));
    }
  }
}

void TraceCapture::Copy(ggml_tensor* t, Kind kind, int32_t slot) {
  scratch_.resize(static_cast<size_t>(ggml_nelements(t)));
  if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) return;  // not produced by these graphs
  ggml_backend_tensor_get(t, scratch_.data(), 0, ggml_nbytes(t));
  const auto s = static_cast<size_t>(slot);
  if (kind == Kind::Attention) {
    const size_t nEnc = out_->encoderTokens.size();
    if (encoderPass_) {
      CopyAttention(t, out_->encoderAttention[s], 0, nEnc, nEnc);
    } else if (selfDone_[s] && !out_->crossAttention.empty()) {
      CopyAttention(t, out_->crossAttention[s], firstNew_, nNew_, nEnc);
    } else {
      selfDone_[s] = true;
      CopyAttention(t, out_->attention[s], firstNew_, nNew_, nKvTotal_);
    }
  } else {
    // [n_embd, n_tokens] (every token of the chunk is an output row, so none is dropped)
    const int64_t nEmbd = t->ne[0], nTok = t->ne[1];
    auto& dst = out_->hidden[s];
    for (int64_t i = 0; i < nTok; i++) {
      const size_t token = chunkStart_ + static_cast<size_t>(i);
      if (token < firstNew_ || token >= nKvTotal_) continue;
      std::memcpy(dst.data() + (token - firstNew_) * static_cast<size_t>(nEmbd), scratch_.data() + i * nEmbd,
                  static_cast<size_t>(nEmbd) * sizeof(float));
    }
  }
}

bool ComputeLogitLens(const OutputHead& head, TraceResult& result, int32_t topK, int32_t threads, std::string& error) {
  const int64_t nEmbd = result.nEmbd;
  const int64_t nVocab = head.output.ne.size() > 1 ? head.output.ne[1] : 0;
  if (head.output.ne.empty() || head.output.ne[0] != nEmbd || head.normWeight.size() != static_cast<size_t>(nEmbd)) {
    error = "The model's output head does not match its embedding size";
    return false;
  }
  size_t nRows = 0;
  for (const auto& h : result.hidden) nRows += h.size() / static_cast<size_t>(nEmbd);
  if (nRows == 0) return true;

  // The final norm, row by row, in float64 then stored as float.
  std::vector<float> normed(nRows * static_cast<size_t>(nEmbd));
  size_t r = 0;
  for (const auto& layer : result.hidden) {
    for (size_t off = 0; off < layer.size(); off += static_cast<size_t>(nEmbd), r++) {
      const float* x = layer.data() + off;
      double mean = 0, var = 0;
      if (!head.rmsNorm) {
        for (int64_t i = 0; i < nEmbd; i++) mean += x[i];
        mean /= static_cast<double>(nEmbd);
      }
      for (int64_t i = 0; i < nEmbd; i++) var += (x[i] - mean) * (x[i] - mean);
      const double scale = 1.0 / std::sqrt(var / static_cast<double>(nEmbd) + head.eps);
      float* y = normed.data() + r * static_cast<size_t>(nEmbd);
      for (int64_t i = 0; i < nEmbd; i++) {
        y[i] = static_cast<float>((x[i] - mean) * scale * head.normWeight[static_cast<size_t>(i)] +
                                  (head.rmsNorm ? 0.0 : head.normBias[static_cast<size_t>(i)]));
      }
    }
  }

  // logits = W · y for every row at once, with ggml's CPU backend (W stays in its own type).
  std::vector<float> logits(static_cast<size_t>(nVocab) * nRows);
  if (!CpuMatMul(head.output.type, head.outputData, nEmbd, nVocab, normed, nRows, threads, logits, error)) return false;

  // Softmax and top-k of each row.
  result.lens.assign(result.hidden.size(), {});
  std::vector<int32_t> order(static_cast<size_t>(nVocab));
  r = 0;
  for (size_t l = 0; l < result.hidden.size(); l++) {
    const size_t rowsInLayer = result.hidden[l].size() / static_cast<size_t>(nEmbd);
    for (size_t i = 0; i < rowsInLayer; i++, r++) {
      const float* z = logits.data() + r * static_cast<size_t>(nVocab);
      const float max = *std::max_element(z, z + nVocab);
      double sum = 0;
      for (int64_t v = 0; v < nVocab; v++) sum += std::exp(static_cast<double>(z[v] - max));
      for (int64_t v = 0; v < nVocab; v++) order[static_cast<size_t>(v)] = static_cast<int32_t>(v);
      const auto k = static_cast<size_t>(std::min<int64_t>(topK, nVocab));
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [z](int32_t a, int32_t b) { return z[a] > z[b]; });
      for (size_t j = 0; j < k; j++) {
        const int32_t v = order[j];
        result.lens[l].emplace_back(v, static_cast<float>(std::exp(static_cast<double>(z[v] - max)) / sum));
      }
    }
  }
  return true;
}

}  // namespace llama_napi
