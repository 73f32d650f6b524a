// The byte format pieces of a saved session state (SessionState.h describes the format): the
// header constants, the Reader and Writer over bytes, the payload checksum, the refusal helpers,
// ggml type names, and the model fingerprint a state carries. Used by SessionState.cc (saving,
// parsing, restoring) and StateLayout.cc (re-framing KV cells). Public llama.cpp API only.
#pragma once

#include <llama.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace llama_napi::state {

constexpr char kMagic[8] = {'L', 'N', 'A', 'P', 'I', 'S', 'Q', '1'};
constexpr size_t kHeaderBytes = sizeof(kMagic) + 4 + 4 + 8 + 8;
// llama_context::state_seq_get_data writes this magic and the sequence id before the memory's state.
constexpr uint32_t kLlamaSeqMagic = 0xaf143cd8;
constexpr uint32_t kMemoryNone = 0, kMemoryParts = 1, kMemoryOpaque = 2;
constexpr uint32_t kPartCache = 1, kPartRaw = 2;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  bool Get(T& v) {
    if (size_ - pos_ < sizeof(T)) return false;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool Bytes(void* dst, size_t n) {
    if (size_ - pos_ < n) return false;
    if (n > 0) std::memcpy(dst, data_ + pos_, n);
    pos_ += n;
    return true;
  }
  // Skips `count` items of `each` bytes (overflow-safe); returns where they start.
  bool Skip(uint64_t count, uint64_t each, size_t& at) {
    if (each != 0 && count > (size_ - pos_) / each) return false;
    at = pos_;
    pos_ += static_cast<size_t>(count * each);
    return true;
  }
  const uint8_t* Here() const { return data_ + pos_; }
  size_t Pos() const { return pos_; }
  size_t Remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  template <typename T>
  void Put(const T& v) {
    Bytes(&v, sizeof(T));
  }
  void Bytes(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = out_.size();
    out_.resize(at + n);
    std::memcpy(out_.data() + at, p, n);
  }
  // Appends a rows × cols matrix of `el`-byte elements transposed (src row-major, rows apart by srcStride).
  void Transposed(const uint8_t* src, size_t rows, size_t cols, size_t el, size_t srcStride) {
    const size_t at = out_.size();
    out_.resize(at + rows * cols * el);
    uint8_t* dst = out_.data() + at;
    for (size_t c = 0; c < cols; c++) {
      for (size_t r = 0; r < rows; r++) std::memcpy(dst + (c * rows + r) * el, src + r * srcStride + c * el, el);
    }
  }

 private:
  std::vector<uint8_t>& out_;
};

// A 64-bit checksum of the payload: catches truncation and corruption before llama.cpp sees
// anything (tests/state-portability.test.ts computes the same in JS).
uint64_t Checksum(const uint8_t* p, size_t n);

// The refusal of a saved state that is malformed; and a failure while saving one.
Failure Invalid(const std::string& what);
Failure Internal(const std::string& what);

// Whether `t` is a ggml type this build knows, and its name (or its number when unknown).
bool ValidType(int32_t t);
std::string TypeName(int32_t t);

// --- the model ---

struct Fingerprint {
  std::string arch;
  uint32_t nVocab = 0, nLayer = 0, nEmbd = 0, nHead = 0, nHeadKv = 0, nSwa = 0;
  int32_t ropeType = 0;
  uint64_t nParams = 0, vocabHash = 0;
};

Fingerprint FingerprintOf(const llama_model* model);
void WriteFingerprint(Writer& w, const Fingerprint& f);
bool ReadFingerprint(Reader& r, Fingerprint& f);
// What differs between the model that saved a state and this one, in words; empty when nothing.
std::string Differences(const Fingerprint& saved, const Fingerprint& here);

}  // namespace llama_napi::state
