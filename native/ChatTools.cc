#include "ChatTools.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace llama_napi {
namespace {

constexpr size_t kMaxTools = 1024;
constexpr size_t kMaxToolCalls = 4096;

const char* TriggerTypeName(common_grammar_trigger_type type) {
  switch (type) {
    case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
      return "token";
    case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:
      return "word";
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
      return "pattern";
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL:
      return "patternFull";
  }
  return "pattern";
}

Napi::Array StringsToJs(Napi::Env env, const std::vector<std::string>& items) {
  Napi::Array out = Napi::Array::New(env, items.size());
  for (size_t i = 0; i < items.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, items[i]));
  return out;
}

// An exception's message, or a placeholder when it has none.
std::string WhatOf(const std::exception& e) {
  std::string what = e.what();
  return what.empty() ? "(no message)" : what;
}

}  // namespace

ToolInputs ReadToolInputs(Napi::Env env, const Options& options) {
  ToolInputs in;
  if (std::optional<Napi::Value> raw = options.Raw("tools")) {
    in.any = true;
    if (!raw->IsArray()) options.Fail("tools", "an array of { name, description, parameters }");
    Napi::Array arr = raw->As<Napi::Array>();
    if (arr.Length() > kMaxTools) options.Fail("tools", "an array of at most " + std::to_string(kMaxTools) + " tools");
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value item = arr.Get(i);
      const std::string name = "options.tools[" + std::to_string(i) + "]";
      if (!item.IsObject() || item.IsArray()) {
        Throw(env, "ERR_INVALID_ARGUMENT", name + " must be an object { name, description, parameters }");
      }
      Options t(env, item.As<Napi::Object>(), name);
      common_chat_tool tool;
      std::optional<std::string> toolName = t.String("name");
      if (!toolName || toolName->empty()) t.Fail("name", "a non-empty string");
      tool.name = std::move(*toolName);
      tool.description = t.String("description").value_or("");
      tool.parameters = t.String("parameters").value_or("{}");
      t.CheckAllRead();
      in.tools.push_back(std::move(tool));
    }
  }
  if (std::optional<std::string> choice = options.String("toolChoice")) {
    in.any = true;
    if (*choice == "auto") {
      in.toolChoice = COMMON_CHAT_TOOL_CHOICE_AUTO;
    } else if (*choice == "none") {
      in.toolChoice = COMMON_CHAT_TOOL_CHOICE_NONE;
    } else if (*choice == "required") {
      in.toolChoice = COMMON_CHAT_TOOL_CHOICE_REQUIRED;
    } else {
      options.Fail("toolChoice", "\"auto\", \"none\" or \"required\"");
    }
  }
  if (std::optional<bool> parallel = options.Bool("parallelToolCalls")) {
    in.any = true;
    in.parallelToolCalls = *parallel;
  }
  if (std::optional<bool> thinking = options.Bool("enableThinking")) {
    in.any = true;
    in.enableThinking = *thinking;
  }
  if (std::optional<std::string> format = options.String("reasoningFormat")) {
    in.any = true;
    if (*format == "auto") {
      in.reasoningFormat = COMMON_REASONING_FORMAT_AUTO;
    } else if (*format == "none") {
      in.reasoningFormat = COMMON_REASONING_FORMAT_NONE;
    } else {
      options.Fail("reasoningFormat", "\"auto\" or \"none\"");
    }
  }
  return in;
}

void ApplyToolInputs(const ToolInputs& in, common_chat_templates_inputs& inputs) {
  inputs.tools = in.tools;
  inputs.tool_choice = in.toolChoice;
  inputs.parallel_tool_calls = in.parallelToolCalls;
  inputs.reasoning_format = in.reasoningFormat;
  if (in.enableThinking) inputs.enable_thinking = *in.enableThinking;
}

void ReadMessageExtras(Napi::Env env, const Options& fields, const std::string& name, common_chat_msg& msg) {
  msg.reasoning_content = fields.String("reasoning").value_or("");
  msg.tool_call_id = fields.String("toolCallId").value_or("");
  msg.tool_name = fields.String("toolName").value_or("");
  std::optional<Napi::Value> calls = fields.Raw("toolCalls");
  if (!calls) return;
  if (!calls->IsArray()) fields.Fail("toolCalls", "an array of { id, name, arguments }");
  Napi::Array arr = calls->As<Napi::Array>();
  if (arr.Length() > kMaxToolCalls) fields.Fail("toolCalls", "an array of at most " + std::to_string(kMaxToolCalls) + " calls");
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value item = arr.Get(i);
    const std::string where = name + ".toolCalls[" + std::to_string(i) + "]";
    if (!item.IsObject() || item.IsArray()) Throw(env, "ERR_INVALID_ARGUMENT", where + " must be an object { id, name, arguments }");
    Options c(env, item.As<Napi::Object>(), where);
    common_chat_tool_call call;
    std::optional<std::string> callName = c.String("name");
    if (!callName || callName->empty()) c.Fail("name", "a non-empty string");
    call.name = std::move(*callName);
    call.id = c.String("id").value_or("");
    call.arguments = c.String("arguments").value_or("{}");
    c.CheckAllRead();
    msg.tool_calls.push_back(std::move(call));
  }
}

ToolOutputs TakeToolOutputs(common_chat_params& params) {
  ToolOutputs out;
  out.format = common_chat_format_name(params.format);
  out.formatId = static_cast<int>(params.format);
  out.grammar = std::move(params.grammar);
  out.grammarLazy = params.grammar_lazy;
  out.triggers = std::move(params.grammar_triggers);
  out.preservedTokens = std::move(params.preserved_tokens);
  out.parser = std::move(params.parser);
  out.supportsThinking = params.supports_thinking;
  out.thinkingStartTag = std::move(params.thinking_start_tag);
  out.thinkingEndTags = std::move(params.thinking_end_tags);
  return out;
}

void SetToolOutputs(Napi::Env env, Napi::Object result, const ToolOutputs& out) {
  result.Set("format", Napi::String::New(env, out.format));
  result.Set("formatId", Napi::Number::New(env, out.formatId));
  result.Set("grammar", Napi::String::New(env, out.grammar));
  result.Set("grammarLazy", Napi::Boolean::New(env, out.grammarLazy));
  Napi::Array triggers = Napi::Array::New(env, out.triggers.size());
  for (size_t i = 0; i < out.triggers.size(); i++) {
    Napi::Object t = Napi::Object::New(env);
    t.Set("type", Napi::String::New(env, TriggerTypeName(out.triggers[i].type)));
    t.Set("value", Napi::String::New(env, out.triggers[i].value));
    triggers.Set(static_cast<uint32_t>(i), t);
  }
  result.Set("grammarTriggers", triggers);
  result.Set("preservedTokens", StringsToJs(env, out.preservedTokens));
  result.Set("parser", Napi::String::New(env, out.parser));
  result.Set("supportsThinking", Napi::Boolean::New(env, out.supportsThinking));
  result.Set("thinkingStartTag", Napi::String::New(env, out.thinkingStartTag));
  result.Set("thinkingEndTags", StringsToJs(env, out.thinkingEndTags));
}

Napi::Function ChatParserWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeChatParser", {InstanceMethod<&ChatParserWrap::Parse>("parse")});
}

ChatParserWrap::ChatParserWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ChatParserWrap>(info) {
  Napi::Env env = info.Env();
  Args args(info);
  Options o(env, args.Object(0, "options"), "ChatParser options");
  const int64_t format = o.Required(o.Int("format", 0, COMMON_CHAT_FORMAT_COUNT - 1), "format");
  const std::string parser = o.String("parser").value_or("");
  params_.format = static_cast<common_chat_format>(format);
  params_.generation_prompt = o.String("generationPrompt").value_or("");
  params_.parse_tool_calls = o.Bool("parseToolCalls").value_or(true);
  const std::string reasoning = o.String("reasoningFormat").value_or("none");
  if (reasoning == "auto") {
    params_.reasoning_format = COMMON_REASONING_FORMAT_AUTO;
  } else if (reasoning != "none") {
    o.Fail("reasoningFormat", "\"auto\" or \"none\"");
  }
  o.CheckAllRead();
  if (!parser.empty()) {
    try {
      params_.parser.load(parser);
    } catch (const std::exception& e) {
      Throw(env, "ERR_INVALID_ARGUMENT", "ChatParser options.parser is not a parser a render gave: " + WhatOf(e));
    }
  }
}

Napi::Value ChatParserWrap::Parse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  const std::string text = args.String(0, "text");
  const bool partial = args.Bool(1, "partial");
  common_chat_msg msg;
  try {
    msg = common_chat_peg_parse(params_.parser, text, partial, params_);
  } catch (const std::exception& e) {
    Throw(env, "ERR_TOOL_CALL", WhatOf(e));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("content", Napi::String::New(env, msg.content));
  out.Set("reasoning", Napi::String::New(env, msg.reasoning_content));
  Napi::Array calls = Napi::Array::New(env, msg.tool_calls.size());
  for (size_t i = 0; i < msg.tool_calls.size(); i++) {
    Napi::Object c = Napi::Object::New(env);
    c.Set("id", Napi::String::New(env, msg.tool_calls[i].id));
    c.Set("name", Napi::String::New(env, msg.tool_calls[i].name));
    c.Set("arguments", Napi::String::New(env, msg.tool_calls[i].arguments));
    calls.Set(static_cast<uint32_t>(i), c);
  }
  out.Set("toolCalls", calls);
  return out;
}

}  // namespace llama_napi
