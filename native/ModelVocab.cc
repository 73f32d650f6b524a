// ModelWrap's vocabulary methods: tokenize, detokenize, token pieces, attributes and special tokens
// (the rest of the class is in Model.cc).
#include <string>
#include <vector>

#include "Model.h"
#include "common.h"

namespace llama_napi {

Napi::Value ModelWrap::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  auto h = Handle(env);
  std::string text = args.String(0, "text");
  bool addSpecial = args.Bool(1, "addSpecial");
  bool parseSpecial = args.Bool(2, "parseSpecial");
  std::vector<llama_token> tokens;
  switch (compat::Tokenize(h->vocab, text, addSpecial, parseSpecial, tokens)) {
    case compat::TokenizeStatus::kOk:
      break;
    case compat::TokenizeStatus::kTooLong:
      Throw(env, "ERR_INVALID_ARGUMENT", "The text is too long to tokenize (over 2^31 tokens)");
    case compat::TokenizeStatus::kVocabIncomplete:
      Throw(env, "ERR_UNSUPPORTED",
            "This model's vocabulary cannot tokenize this text: llama.cpp's tokenizer needs a token the vocabulary "
            "lacks (for SentencePiece models, a <0xNN> byte token for a byte of the text). The model file's tokenizer "
            "is incomplete; use a complete GGUF, or avoid the characters it cannot represent");
  }
  return ToInt32Array(env, tokens.data(), tokens.size());
}

llama_token ModelWrap::CheckedToken(Napi::Env env, const Napi::Value& v) const {
  auto h = Handle(env);
  if (!v.IsNumber()) Throw(env, "ERR_INVALID_ARGUMENT", "token must be an integer");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d < h->nVocab) || static_cast<double>(static_cast<int64_t>(d)) != d) {
    Throw(env, "ERR_TOKEN_INVALID",
          "Token " + std::to_string(d) + " is out of range: this model's token ids are 0.." + std::to_string(h->nVocab - 1));
  }
  return static_cast<llama_token>(d);
}

Napi::Value ModelWrap::Detokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  auto h = Handle(env);
  std::vector<llama_token> tokens = args.Tokens(0, "tokens");
  bool removeSpecial = args.Bool(1, "removeSpecial");
  bool unparseSpecial = args.Bool(2, "unparseSpecial");
  // undefined: the vocabulary's default (compat::DefaultCleanSpaces).
  bool cleanSpaces = args.IsMissing(3) ? compat::DefaultCleanSpaces(h->vocab) : args.Bool(3, "cleanUpSpaces");
  for (size_t i = 0; i < tokens.size(); i++) {
    if (tokens[i] < 0 || tokens[i] >= h->nVocab) {
      Throw(env, "ERR_TOKEN_INVALID",
            "tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
                " is out of range: this model's token ids are 0.." + std::to_string(h->nVocab - 1));
    }
  }
  std::string text;
  if (!compat::Detokenize(h->vocab, tokens, removeSpecial, unparseSpecial, cleanSpaces, text)) {
    Throw(env, "ERR_UNSUPPORTED", "llama_detokenize failed on these tokens: the model's vocabulary is incomplete or inconsistent");
  }
  return Napi::String::New(env, text);
}

Napi::Value ModelWrap::TokenToPiece(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  auto h = Handle(env);
  llama_token token = CheckedToken(env, info[0]);
  bool special = args.Bool(1, "special");
  std::string piece = compat::TokenPiece(h->vocab, token, special);
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(piece.data()), piece.size());
}

Napi::Value ModelWrap::SpecialTokens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Handle(env);
  const llama_vocab* v = h->vocab;
  Napi::Object out = Napi::Object::New(env);
  auto set = [&](const char* name, llama_token t) {
    out.Set(name, t == LLAMA_TOKEN_NULL ? env.Null() : Napi::Value(Napi::Number::New(env, t)));
  };
  set("bos", llama_vocab_bos(v));
  set("eos", llama_vocab_eos(v));
  set("eot", llama_vocab_eot(v));
  set("sep", llama_vocab_sep(v));
  set("nl", llama_vocab_nl(v));
  set("pad", llama_vocab_pad(v));
  set("mask", llama_vocab_mask(v));
  set("fimPre", llama_vocab_fim_pre(v));
  set("fimSuf", llama_vocab_fim_suf(v));
  set("fimMid", llama_vocab_fim_mid(v));
  set("fimPad", llama_vocab_fim_pad(v));
  set("fimRep", llama_vocab_fim_rep(v));
  set("fimSep", llama_vocab_fim_sep(v));
  out.Set("addBos", llama_vocab_get_add_bos(v));
  out.Set("addEos", llama_vocab_get_add_eos(v));
  out.Set("addSep", llama_vocab_get_add_sep(v));
  return out;
}

Napi::Value ModelWrap::IsEog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_token t = CheckedToken(env, info[0]);
  return Napi::Boolean::New(env, llama_vocab_is_eog(handle_->vocab, t));
}

Napi::Value ModelWrap::IsControl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_token t = CheckedToken(env, info[0]);
  return Napi::Boolean::New(env, llama_vocab_is_control(handle_->vocab, t));
}

// The attribute flags llama.cpp keeps for a token (from the GGUF token types, adjusted per model).
Napi::Value ModelWrap::TokenAttributes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_token t = CheckedToken(env, info[0]);
  const auto attr = static_cast<uint32_t>(llama_vocab_get_attr(handle_->vocab, t));
  Napi::Object out = Napi::Object::New(env);
  auto set = [&](const char* name, llama_token_attr flag) { out.Set(name, (attr & flag) != 0); };
  set("unknown", LLAMA_TOKEN_ATTR_UNKNOWN);
  set("unused", LLAMA_TOKEN_ATTR_UNUSED);
  set("normal", LLAMA_TOKEN_ATTR_NORMAL);
  set("control", LLAMA_TOKEN_ATTR_CONTROL);
  set("userDefined", LLAMA_TOKEN_ATTR_USER_DEFINED);
  set("byte", LLAMA_TOKEN_ATTR_BYTE);
  set("normalized", LLAMA_TOKEN_ATTR_NORMALIZED);
  set("lstrip", LLAMA_TOKEN_ATTR_LSTRIP);
  set("rstrip", LLAMA_TOKEN_ATTR_RSTRIP);
  set("singleWord", LLAMA_TOKEN_ATTR_SINGLE_WORD);
  return out;
}

// The token as the vocabulary stores it (GPT-2 stores " world" as "Ġworld").
Napi::Value ModelWrap::TokenText(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  llama_token t = CheckedToken(env, info[0]);
  const char* text = llama_vocab_get_text(handle_->vocab, t);
  return Napi::String::New(env, text != nullptr ? text : "");
}

}  // namespace llama_napi
