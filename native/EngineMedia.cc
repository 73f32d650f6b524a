// Prompts with images and audio: libmtmd turns the text (with one media marker per item) and the
// decoded media into chunks; text chunks are decoded as tokens, media chunks are encoded by the
// projector and decoded as embeddings (mtmd_helper_eval_chunk_single), on the engine thread.
//
// In a session's history a media chunk is a run of kMediaToken positions, with the chunk kept
// in SeqState::media at its first position. Prefix reuse compares media chunks by their id (the
// SHA-256 of the media's bytes): the same image at the same place is not encoded again.
#include "EngineMedia.h"

#include <cstring>

#include "Engine.h"

namespace llama_napi {

const MediaChunk* SeqState::MediaAt(size_t pos, size_t* start) const {
  auto it = media.upper_bound(pos);
  if (it == media.begin()) return nullptr;
  --it;
  if (pos >= it->first + it->second->nTokens) return nullptr;
  if (start) *start = it->first;
  return it->second.get();
}

size_t SeqState::CutMedia(size_t length) {
  if (length > 0) {
    size_t start = 0;
    // A chunk that `length` cuts, or that ends the history, goes.
    if (MediaAt(length - 1, &start) != nullptr) length = start;
  }
  media.erase(media.lower_bound(length), media.end());
  return length;
}

namespace {

// Whether position i of two histories holds the same thing (a media position compares its
// chunk's id at the chunk's start).
bool SamePosition(const std::vector<llama_token>& a, const std::map<size_t, std::shared_ptr<MediaChunk>>& am,
                  const std::vector<llama_token>& b, const std::map<size_t, std::shared_ptr<MediaChunk>>& bm, size_t i) {
  if (a[i] != b[i]) return false;
  if (a[i] != kMediaToken) return true;
  auto ai = am.find(i);
  auto bi = bm.find(i);
  if ((ai == am.end()) != (bi == bm.end())) return false;
  return ai == am.end() || (ai->second->id == bi->second->id && ai->second->nTokens == bi->second->nTokens);
}

}  // namespace

Failure TokenizeMedia(Projector& projector, MediaPrompt& prompt, int32_t nVocab) {
  mtmd_context* mctx = projector.ctx.get();
  std::vector<MtmdBitmapPtr> bitmaps;
  for (size_t i = 0; i < prompt.media.size(); i++) {
    const std::vector<uint8_t>& bytes = prompt.media[i];
    mtmd_helper_bitmap_wrapper w{};
    try {
      w = mtmd_helper_bitmap_init_from_buf(mctx, bytes.data(), bytes.size(), false, mtmd_helper_init_opt_default());
    } catch (const std::exception& e) {
      // miniaudio's frame count of a damaged file can make the decoder's buffer throw (length_error).
      return {"ERR_MEDIA_INVALID", "Media item " + std::to_string(i) + " could not be decoded: " + e.what()};
    }
    MtmdBitmapPtr bitmap(w.bitmap);
    if (!bitmap) {
      return {"ERR_MEDIA_INVALID", "Media item " + std::to_string(i) + " (" + std::to_string(bytes.size()) +
                                       " bytes) could not be decoded: an image must be PNG, JPEG, BMP or GIF, audio WAV, MP3 or FLAC"};
    }
    const bool audio = mtmd_bitmap_is_audio(bitmap.get());
    if (audio && !projector.audio) return {"ERR_UNSUPPORTED", "Media item " + std::to_string(i) + " is audio, which this model's projector (" + projector.type + ") does not take"};
    if (!audio && !projector.vision) return {"ERR_UNSUPPORTED", "Media item " + std::to_string(i) + " is an image, which this model's projector (" + projector.type + ") does not take"};
    if (!audio && (mtmd_bitmap_get_nx(bitmap.get()) == 0 || mtmd_bitmap_get_ny(bitmap.get()) == 0)) {
      return {"ERR_MEDIA_INVALID", "Media item " + std::to_string(i) + " is an image of zero size"};
    }
    // libmtmd's mel spectrogram asserts on fewer than two samples.
    if (audio && mtmd_bitmap_get_n_bytes(bitmap.get()) <= 2 * sizeof(float)) {
      return {"ERR_MEDIA_INVALID", "Media item " + std::to_string(i) + " is audio with almost no samples"};
    }
    bitmaps.push_back(std::move(bitmap));
  }
  std::vector<const mtmd_bitmap*> views;
  for (auto& b : bitmaps) views.push_back(b.get());
  MtmdChunksPtr chunks(mtmd_input_chunks_init());
  mtmd_input_text text{prompt.text.c_str(), prompt.text.size(), prompt.addSpecial, prompt.parseSpecial};
  const int32_t ret = mtmd_tokenize(mctx, chunks.get(), &text, views.data(), views.size());
  if (ret == 1) return {"ERR_INVALID_ARGUMENT", "The prompt's media markers do not match its media items"};
  if (ret != 0) return {"ERR_MEDIA_INVALID", "The projector could not preprocess the media (mtmd_tokenize returned " + std::to_string(ret) + ")"};
  const size_t n = mtmd_input_chunks_size(chunks.get());
  const MediaChunk* previous = nullptr;  // the chunk before, when it was media
  for (size_t i = 0; i < n; i++) {
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
    if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
      previous = nullptr;
      size_t count = 0;
      const llama_token* tokens = mtmd_input_chunk_get_tokens_text(chunk, &count);
      for (size_t k = 0; k < count; k++) {
        if (tokens[k] < 0 || tokens[k] >= nVocab) return {"ERR_TOKEN_INVALID", "The projector's text gave token " + std::to_string(tokens[k]) + ", out of this model's range"};
        prompt.tokens.push_back(tokens[k]);
      }
      continue;
    }
    auto media = std::make_shared<MediaChunk>();
    media->chunk.reset(mtmd_input_chunk_copy(chunk));
    const char* id = mtmd_input_chunk_get_id(chunk);
    media->id = id ? id : "";
    media->nTokens = mtmd_input_chunk_get_n_tokens(chunk);
    media->audio = mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_AUDIO;
    if (media->nTokens == 0) return {"ERR_MEDIA_INVALID", "The projector made no tokens of a media item"};
    if (static_cast<size_t>(mtmd_input_chunk_get_n_pos(chunk)) != media->nTokens) {
      return {"ERR_UNSUPPORTED", "The projector gives a media chunk fewer positions than tokens (M-RoPE), which llama-napi does not support yet"};
    }
    prompt.chunks.emplace(prompt.tokens.size(), media);
    prompt.tokens.insert(prompt.tokens.end(), media->nTokens, kMediaToken);
    if (previous != nullptr && previous->id == media->id) {
      prompt.itemPositions.back() += media->nTokens;
    } else {
      prompt.itemPositions.push_back(media->nTokens);
    }
    previous = media.get();
  }
  if (prompt.tokens.empty()) return {"ERR_INVALID_ARGUMENT", "The prompt is empty"};
  if (prompt.endWithText && prompt.tokens.back() == kMediaToken) {
    return {"ERR_INVALID_ARGUMENT", "The prompt ends with an image or audio: end it with text (a media chunk gives no next-token logits)"};
  }
  return {};
}

Failure Engine::RunMediaPrompt(SeqState& seq, MediaPrompt& prompt, const std::atomic<bool>& aborted) {
  std::shared_ptr<Projector> projector = model_->projector();
  if (!projector) return {"ERR_STATE", "This model has no projector: load one with model.loadProjector(path) (or loadModel(path, { projector }))"};
  std::lock_guard<std::mutex> lk(projector->mu);
  if (Failure f = TokenizeMedia(*projector, prompt, model_->nVocab); !f.ok()) return f;

  // The new history, and what of the cache it reuses.
  std::vector<llama_token> tokens;
  std::map<size_t, std::shared_ptr<MediaChunk>> media;
  if (prompt.append) {
    tokens = seq.tokens;
    media = seq.media;
  }
  const size_t offset = tokens.size();
  tokens.insert(tokens.end(), prompt.tokens.begin(), prompt.tokens.end());
  for (auto& [at, chunk] : prompt.chunks) media.emplace(offset + at, chunk);
  if (tokens.size() > capacity_) {
    return {"ERR_CONTEXT_FULL", "The prompt needs " + std::to_string(tokens.size()) + " tokens (" + std::to_string(prompt.tokens.size()) +
                                    " of them new, images and audio included) but a session of this context holds at most " +
                                    std::to_string(capacity_) + ". Shorten the prompt, or create the context with a larger contextSize."};
  }
  size_t common = 0;
  const size_t limit = std::min(seq.nKv, tokens.size());
  while (common < limit && SamePosition(seq.tokens, seq.media, tokens, media, common)) common++;
  size_t start = 0;
  if (common < tokens.size() && seq.MediaAt(common, &start) != nullptr && start < common) common = start;  // never half a chunk
  if (common < seq.nKv) {
    seq.nKv = common;
    seq.needTrim = true;
  }
  SyncSeq(seq);
  seq.tokens = std::move(tokens);
  seq.media = std::move(media);
  prompt.reused = seq.nKv;
  if (seq.nKv == seq.tokens.size()) {
    if (seq.logitsValid) return {};
    seq.nKv -= 1;  // the last position is text: evaluate it again for the logits
    seq.needTrim = true;
    SyncSeq(seq);
  }
  seq.logitsValid = false;

  // Evaluate: media chunks through libmtmd, text runs in batches.
  const size_t first = seq.nKv;
  auto fail = [&](Failure f) {
    seq.tokens.resize(seq.CutMedia(seq.nKv));
    seq.needTrim = true;
    return f;
  };
  while (seq.nKv < seq.tokens.size()) {
    if (aborted.load()) {
      return fail({"ERR_ABORTED", "The prompt evaluation was aborted; the session keeps the " + std::to_string(seq.nKv) + " tokens evaluated before that"});
    }
    auto chunk = seq.media.find(seq.nKv);
    if (chunk != seq.media.end()) {
      llama_pos next = static_cast<llama_pos>(seq.nKv);
      int32_t ret = 0;
      // The encoder runs on libmtmd's own threads: the context's pools must not poll meanwhile.
      PausePools();
      try {
        ret = mtmd_helper_eval_chunk_single(projector->ctx.get(), ctx_.get(), chunk->second->chunk.get(), static_cast<llama_pos>(seq.nKv), seq.id,
                                            static_cast<int32_t>(nBatch_), false, &next);
      } catch (const std::exception& e) {
        return fail({"ERR_DECODE", std::string("The projector failed on a media chunk: ") + e.what()});
      }
      if (ret != 0) return fail({"ERR_DECODE", "The projector failed on a media chunk (mtmd_helper_eval_chunk_single returned " + std::to_string(ret) + ")"});
      stats_.decodeCalls++;
      seq.nKv += chunk->second->nTokens;
      seq.nDecoded += chunk->second->nTokens;
      continue;
    }
    // The text up to the next media chunk, a batch at a time (abort checked between batches).
    auto nextMedia = seq.media.upper_bound(seq.nKv);
    const size_t end = nextMedia == seq.media.end() ? seq.tokens.size() : nextMedia->first;
    if (Failure f = DecodeRun(seq, std::min<size_t>(end, seq.nKv + nBatch_)); !f.ok()) return fail(f);
  }
  std::memcpy(seq.logits, llama_get_logits_ith(ctx_.get(), -1), sizeof(float) * static_cast<size_t>(model_->nVocab));
  seq.logitsValid = true;
  prompt.evaluated = seq.nKv - first;
  return {};
}

}  // namespace llama_napi
