// N-gram lookup decoding ("prompt lookup"): where the text repeats itself (code, quotes, a model
// stuck in a loop), the tokens that followed the last occurrence of the history's final n-gram
// are a cheap guess of what comes next. The guess (the draft) is decoded in the same batch as the
// session's next token, with logits at every position; then the engine samples at each position
// in turn, exactly as it would one token at a time, and keeps the draft while the sampled token
// equals the draft's. The first sample that differs is kept instead and the rest of the draft is
// dropped from the KV cache.
//
// So the output is the one plain decoding gives: the same sampler chain sees the same logits in
// the same order and draws the same random numbers (greedy or not, grammars, stop strings,
// logprobs and logits processors included); only the number of llama_decode calls changes. A
// draft costs the extra positions of one batch; when drafts keep missing, their length halves
// down to one token (and doubles back after a draft that was right all along), and then drafting
// pauses for 1, 2, 4 ... 64 steps. A draft model's drafts (native/EngineDraft.cc) go the same way.
#include "Engine.h"

#include <algorithm>

namespace llama_napi {
namespace {

// The continuation (at most `limit` tokens) of the most recent earlier occurrence of the
// history's last n tokens, for n = ngram down to ngramMin, into `draft` (whose storage is reused
// from step to step); left empty when there is none. Media positions (kMediaToken) never match
// and end a continuation.
void FindDraft(const std::vector<llama_token>& h, int32_t ngram, int32_t ngramMin, size_t limit, std::vector<llama_token>& draft) {
  draft.clear();
  const size_t len = h.size();
  for (size_t n = static_cast<size_t>(ngram); n >= static_cast<size_t>(std::max(ngramMin, 1)); n--) {
    if (len < n + 1) continue;
    const llama_token* tail = h.data() + (len - n);
    if (std::find(tail, tail + n, kMediaToken) != tail + n) continue;
    for (size_t j = len - n; j-- > 0;) {
      if (!std::equal(tail, tail + n, h.data() + j)) continue;
      // Past the end of the history the draft goes on copying itself: a text that repeats with
      // period p continues with the same p tokens (a loop of one token drafts that token again).
      for (size_t k = j + n; draft.size() < limit; k++) {
        const llama_token t = k < len ? h[k] : draft[k - len];
        if (t == kMediaToken) break;
        draft.push_back(t);
      }
      if (!draft.empty()) return;
    }
  }
}

}  // namespace

void Engine::AddDraft(GenJob& gen, int32_t last, size_t room) {
  gen.draft.clear();
  SeqState& seq = *gen.seq;
  if (gen.maxDraft <= 0 || last < 0 || seq.tokens.size() != seq.nKv + 1) return;
  if (gen.draftPause > 0) {
    gen.draftPause--;
    return;
  }
  // Room in the batch, in the session (no context shift in the middle of a draft: each sample
  // adds a token, and the last one needs no room of its own) and in maxTokens (each draft
  // position gives one more sample).
  size_t limit = std::min<size_t>(static_cast<size_t>(gen.draftLimit), room);
  limit = std::min(limit, capacity_ > seq.tokens.size() + 1 ? capacity_ - seq.tokens.size() - 1 : 0);
  limit = std::min<size_t>(limit, static_cast<size_t>(std::max<int64_t>(gen.maxTokens - gen.produced - 1, 0)));
  if (limit == 0) return;
  if (gen.draftModel) {
    DraftFromModel(gen, limit);
  } else {
    FindDraft(seq.tokens, gen.lookupNgram, gen.lookupNgramMin, limit, gen.draft);
  }
  for (size_t k = 0; k < gen.draft.size(); k++) {
    batch_->Add(gen.draft[k], static_cast<llama_pos>(seq.tokens.size() + k), seq.id, true);
  }
  gen.drafted += static_cast<int64_t>(gen.draft.size());
}

void Engine::SampleAlongDraft(GenJob& gen, int32_t last) {
  SeqState& seq = *gen.seq;
  Sample(gen, llama_get_logits_ith(ctx_.get(), last));
  size_t kept = 0;
  while (kept < gen.draft.size() && gen.reason == FinishReason::None && seq.tokens.back() == gen.draft[kept]) {
    // The sample confirms the draft token: its KV entry (decoded from that very token) stands.
    // (Counted before the next sample, which may end the generation and hand the counts to JS.)
    seq.nKv++;
    seq.nDecoded++;
    kept++;
    gen.accepted++;
    Sample(gen, llama_get_logits_ith(ctx_.get(), last + static_cast<int32_t>(kept)));
  }
  if (gen.draft.empty()) return;
  if (kept < gen.draft.size()) seq.needTrim = true;  // the rest of the draft leaves the cache
  if (kept == 0 && gen.draftLimit == 1) {
    // Even one-token drafts miss: a batch of two costs more than one token on many machines
    // (the CPU), so no drafts for a while, longer after each further miss.
    gen.draftPause = gen.draftBackoff;
    gen.draftBackoff = std::min(64, gen.draftBackoff * 2);
  } else if (kept == 0) {
    gen.draftLimit = std::max(1, gen.draftLimit / 2);
  } else {
    gen.draftBackoff = 1;
    if (kept == gen.draft.size()) gen.draftLimit = std::min(gen.maxDraft, gen.draftLimit * 2);
  }
  gen.draft.clear();
}

}  // namespace llama_napi
