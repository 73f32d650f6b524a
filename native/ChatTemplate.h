// ChatTemplate: renders a conversation into a prompt with a model's chat template, through
// llama.cpp's own engines. JS side: src/chat.ts.
//
//  - Jinja (the path llama-server takes with --jinja): common_chat_templates_init() parses the
//    template once (the model's tokenizer.chat_template, or a template string), and
//    common_chat_templates_apply() renders it with llama.cpp's Jinja engine (common/jinja).
//  - Built-in: llama_chat_apply_template() (llama.h), llama.cpp's hand-written versions of the
//    common templates, recognised from the template text or named ("chatml", "llama2", ...).
//
// Parsing and rendering run on the libuv thread pool; a template is parsed on its first Jinja
// render and reused afterwards.
#pragma once

#include <napi.h>

#include <memory>

namespace llama_napi {

class ChatTemplateWrap : public Napi::ObjectWrap<ChatTemplateWrap> {
 public:
  static Napi::Function Init(Napi::Env env);

  // new ChatTemplate(model: NativeModel | null, options: { template?, bosToken?, eosToken? })
  // With a model and no template: the model's own. Without a model: `template` is required.
  explicit ChatTemplateWrap(const Napi::CallbackInfo& info);
  ~ChatTemplateWrap() override;

  struct State;  // defined in ChatTemplate.cc

 private:
  // apply(messages: {role, content}[], { addGenerationPrompt, engine: "jinja" | "builtin", kwargs? })
  //   -> Promise<{ prompt, additionalStops, generationPrompt }>
  Napi::Value Apply(const Napi::CallbackInfo& info);
  // The template text in use: the one given, else the model's ("" when it has none).
  Napi::Value Source(const Napi::CallbackInfo& info);

  std::shared_ptr<State> state_;  // shared with the workers that render with it
};

// builtinChatTemplates() -> string[]: the names llama_chat_apply_template knows.
Napi::Value BuiltinChatTemplates(const Napi::CallbackInfo& info);

}  // namespace llama_napi
