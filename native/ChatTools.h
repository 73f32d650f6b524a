// Tool calling and reasoning through llama.cpp's common/chat: what a Jinja render needs beyond
// role + content (tools, tool_choice, parallel tool calls, thinking, messages with tool calls and
// tool results), what it gives back (the tool-call grammar, its lazy triggers, preserved tokens,
// the output format and its PEG parser), and ChatParser, the wrapped class that turns (partial)
// model output into { content, reasoning, toolCalls } with common_chat_peg_parse. JS side:
// src/chat-tools.ts (ChatOutputParser) and src/chat.ts (ChatTemplate.render's tool options).
#pragma once

#include <napi.h>

// llama.cpp's common headers define helpers the addon does not use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <chat.h>
#pragma GCC diagnostic pop

#include <optional>
#include <string>
#include <vector>

#include "common.h"

namespace llama_napi {

// The tool and reasoning part of a render's options (ChatTemplate.apply's options object).
struct ToolInputs {
  std::vector<common_chat_tool> tools;
  common_chat_tool_choice toolChoice = COMMON_CHAT_TOOL_CHOICE_AUTO;
  bool parallelToolCalls = false;
  std::optional<bool> enableThinking;
  common_reasoning_format reasoningFormat = COMMON_REASONING_FORMAT_NONE;
  bool any = false;  // a tool option or a thinking option was given
};

// Reads tools / toolChoice / parallelToolCalls / enableThinking / reasoningFormat from `options`
// (checked; throws ERR_INVALID_ARGUMENT).
ToolInputs ReadToolInputs(Napi::Env env, const Options& options);
void ApplyToolInputs(const ToolInputs& in, common_chat_templates_inputs& inputs);

// The optional fields of a message beyond role and content: reasoning, toolCalls
// ([{ id, name, arguments }]), toolCallId, toolName. Checked; throws ERR_INVALID_ARGUMENT.
void ReadMessageExtras(Napi::Env env, const Options& fields, const std::string& name, common_chat_msg& msg);

// What a render with tools gives beyond the prompt.
struct ToolOutputs {
  std::string format;  // common_chat_format_name
  int formatId = 0;
  std::string grammar;
  bool grammarLazy = false;
  std::vector<common_grammar_trigger> triggers;
  std::vector<std::string> preservedTokens;
  std::string parser;  // the serialised PEG arena ("" for content only)
  bool supportsThinking = false;
  std::string thinkingStartTag;
  std::vector<std::string> thinkingEndTags;
};
ToolOutputs TakeToolOutputs(common_chat_params& params);
void SetToolOutputs(Napi::Env env, Napi::Object result, const ToolOutputs& out);

// new ChatParser({ format: number, parser: string, generationPrompt: string,
//                  reasoningFormat: "none" | "auto", parseToolCalls: boolean })
// parse(text: string, partial: boolean) -> { content, reasoning, toolCalls: [{ id, name, arguments }] }
// Parsing is synchronous: it is called for every streamed piece, takes time linear in the text
// (microseconds for a reply), and a round trip to the thread pool would cost more than it saves.
// A complete output that does not match the format throws ERR_TOOL_CALL with llama.cpp's message.
class ChatParserWrap : public Napi::ObjectWrap<ChatParserWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit ChatParserWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Parse(const Napi::CallbackInfo& info);

  common_chat_parser_params params_;
};

}  // namespace llama_napi
