// Prompts with images and audio (native/EngineMedia.cc; JS: session.prompt([...parts])).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "Projector.h"
#include "common.h"

namespace llama_napi {

// One prompt with media: the text (one libmtmd marker per media item) and the items' bytes,
// copied on the JS thread; filled in by TokenizeMedia and Engine::RunMediaPrompt.
struct MediaPrompt {
  std::string text;
  std::vector<std::vector<uint8_t>> media;
  bool append = false;
  bool addSpecial = false;
  bool parseSpecial = false;
  bool endWithText = true;  // a prompt must (its last position gives the logits); encodeMedia need not
  // The prompt's positions (kMediaToken for media) and its media chunks by position.
  std::vector<int32_t> tokens;
  std::map<size_t, std::shared_ptr<MediaChunk>> chunks;
  // The positions each media item takes, in order (an item may be several chunks: audio past
  // one window; adjacent items of the same bytes with no text between them count as one).
  std::vector<size_t> itemPositions;
  size_t reused = 0;
  size_t evaluated = 0;
};

// Decodes the media and splits the prompt into text tokens and media chunks (holding the
// projector's lock). ERR_MEDIA_INVALID, ERR_UNSUPPORTED, ERR_INVALID_ARGUMENT.
Failure TokenizeMedia(Projector& projector, MediaPrompt& prompt, int32_t nVocab);

}  // namespace llama_napi
