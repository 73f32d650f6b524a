#include "ChatTemplate.h"

// llama.cpp's common headers define helpers the addon does not use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <chat.h>
#include <log.h>  // common/log.h (angle brackets: native/log.h is "log.h")
#pragma GCC diagnostic pop

#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ChatTools.h"
#include "Model.h"
#include "common.h"
#include "llama_compat.h"
#include "log.h"

namespace llama_napi {

// What a ChatTemplate object holds. The parse happens on a worker thread, so the state is shared
// with the workers and guarded by `mu` (renders of one template run one at a time).
struct ChatTemplateWrap::State {
  std::mutex mu;                       // guards model, parsed and parseFailure
  std::shared_ptr<ModelHandle> model;  // until the Jinja template is parsed (it reads the vocabulary)
  std::string custom;                  // the template string given, "" for the model's own
  std::string bos;                     // BOS/EOS text for templates without a model
  std::string eos;
  std::string modelTemplate;  // the model's tokenizer.chat_template, "" when none
  common_chat_templates_ptr parsed;
  Failure parseFailure;
};

namespace {

constexpr size_t kMaxMessages = 1 << 20;

// role, content, and for the Jinja engine the tool-calling fields (ReadMessageExtras).
using Message = common_chat_msg;

struct Rendered {
  std::string prompt;
  std::vector<std::string> additionalStops;
  std::string generationPrompt;
  std::optional<ToolOutputs> tools;  // set when the render was given tool or thinking options
};

// llama.cpp's common library logs through its own logger; keep it at the addon's level
// (setLogLevel). Its errors come back to the caller as the ERR_TEMPLATE_INVALID message, so at
// the default level (errors only) it prints nothing. Called on the JS thread before a render.
void SyncCommonLogLevel() {
  const int level = GetLogLevel();
  const int thold = level <= GGML_LOG_LEVEL_DEBUG  ? LOG_LEVEL_DEBUG
                    : level == GGML_LOG_LEVEL_INFO ? LOG_LEVEL_INFO
                    : level == GGML_LOG_LEVEL_WARN ? LOG_LEVEL_WARN
                                                   : -1;
  if (common_log_get_verbosity_thold() != thold) common_log_set_verbosity_thold(thold);
}

// An exception's message, without the rule of dashes and blank lines the Jinja runtime starts with.
std::string What(const std::exception& e) {
  std::string what = e.what();
  const size_t start = what.find_first_not_of("-\n\r\t ");
  what = start == std::string::npos ? "" : what.substr(start);
  return what.empty() ? "(no message)" : what;
}

// Parses the Jinja template. common_chat_templates_init rethrows a parse error as a plain
// std::exception (its message lost), so the template is parsed again on its own for the message.
void Parse(ChatTemplateWrap::State& s) {
  const llama_model* model = s.model ? s.model->model.get() : nullptr;
  try {
    s.parsed = common_chat_templates_init(model, s.custom, s.bos, s.eos);
  } catch (const std::exception& e) {
    std::string message = What(e);
    const std::string& source = s.custom.empty() ? s.modelTemplate : s.custom;
    try {
      common_chat_template check(source, s.bos, s.eos);
    } catch (const std::exception& precise) {
      message = What(precise);
    }
    s.parseFailure = {"ERR_TEMPLATE_INVALID", "The chat template could not be parsed: " + message};
  }
  s.model.reset();
}

Failure RenderJinja(ChatTemplateWrap::State& s, const std::vector<Message>& messages, bool addGenerationPrompt,
                    const std::map<std::string, std::string>& kwargs, const ToolInputs& tools, Rendered& out) {
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.parsed && s.parseFailure.ok()) Parse(s);
  if (!s.parseFailure.ok()) return s.parseFailure;
  common_chat_templates_inputs inputs;
  inputs.use_jinja = true;
  inputs.add_generation_prompt = addGenerationPrompt;
  inputs.chat_template_kwargs = kwargs;
  inputs.messages = messages;
  ApplyToolInputs(tools, inputs);
  try {
    common_chat_params params = common_chat_templates_apply(s.parsed.get(), inputs);
    out.prompt = std::move(params.prompt);
    out.additionalStops = std::move(params.additional_stops);
    out.generationPrompt = std::move(params.generation_prompt);
    if (tools.any) out.tools = TakeToolOutputs(params);
    return {};
  } catch (const std::exception& e) {
    // With tools, the format's own handling is the point: report its error. Otherwise retried
    // below, whose error (the template's own) is the one reported.
    if (!tools.tools.empty()) return {"ERR_TEMPLATE_INVALID", "The chat template failed to render with tools: " + What(e)};
  }
  // llama-server's path also builds an output parser from the template; when only that fails
  // (the template renders, but its format is not recognised), render the template directly.
  try {
    inputs.force_pure_content = true;
    common_chat_params params = common_chat_templates_apply(s.parsed.get(), inputs);
    out.prompt = std::move(params.prompt);
    out.generationPrompt = std::move(params.generation_prompt);
    if (tools.any) out.tools = TakeToolOutputs(params);
    return {};
  } catch (const std::exception& e) {
    return {"ERR_TEMPLATE_INVALID", "The chat template failed to render: " + What(e)};
  }
}

Failure RenderBuiltin(ChatTemplateWrap::State& s, const std::vector<Message>& messages, bool addGenerationPrompt,
                      Rendered& out) {
  // custom and modelTemplate never change after construction: no lock needed.
  const std::string tmpl = !s.custom.empty() ? s.custom : !s.modelTemplate.empty() ? s.modelTemplate : "chatml";
  std::vector<std::string> roles;
  std::vector<std::string> contents;
  for (const auto& m : messages) {
    if (m.role.find('\0') != std::string::npos || m.content.find('\0') != std::string::npos) {
      return {"ERR_INVALID_ARGUMENT", "llama.cpp's built-in chat templates take no NUL characters in messages"};
    }
    roles.push_back(m.role);
    contents.push_back(m.content);
  }
  if (!compat::ChatApplyBuiltin(tmpl, roles, contents, addGenerationPrompt, out.prompt)) {
    return {"ERR_TEMPLATE_INVALID",
            "llama.cpp's built-in chat templates do not recognise this template" +
                std::string(s.custom.empty() ? " (the model's)" : "") +
                "; render it with the Jinja engine instead (engine: \"jinja\"), or name a built-in template such as "
                "\"chatml\" or \"llama2\""};
  }
  return {};
}

class RenderWorker : public Napi::AsyncWorker {
 public:
  RenderWorker(Napi::Env env, std::shared_ptr<ChatTemplateWrap::State> state, std::vector<Message> messages,
               bool addGenerationPrompt, bool jinja, std::map<std::string, std::string> kwargs, ToolInputs tools,
               Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "llama-napi:chatTemplate"),
        state_(std::move(state)),
        messages_(std::move(messages)),
        addGenerationPrompt_(addGenerationPrompt),
        jinja_(jinja),
        kwargs_(std::move(kwargs)),
        tools_(std::move(tools)),
        deferred_(deferred) {}

  void Execute() override {
    failure_ = jinja_ ? RenderJinja(*state_, messages_, addGenerationPrompt_, kwargs_, tools_, out_)
                         : RenderBuiltin(*state_, messages_, addGenerationPrompt_, out_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (RejectIfFailed(env, deferred_, failure_)) return;
    Napi::Object result = Napi::Object::New(env);
    result.Set("prompt", Napi::String::New(env, out_.prompt));
    Napi::Array stops = Napi::Array::New(env, out_.additionalStops.size());
    for (size_t i = 0; i < out_.additionalStops.size(); i++) {
      stops.Set(static_cast<uint32_t>(i), Napi::String::New(env, out_.additionalStops[i]));
    }
    result.Set("additionalStops", stops);
    result.Set("generationPrompt", Napi::String::New(env, out_.generationPrompt));
    if (out_.tools) SetToolOutputs(env, result, *out_.tools);
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::shared_ptr<ChatTemplateWrap::State> state_;
  std::vector<Message> messages_;
  bool addGenerationPrompt_;
  bool jinja_;
  std::map<std::string, std::string> kwargs_;
  ToolInputs tools_;
  Napi::Promise::Deferred deferred_;
  Rendered out_;
  Failure failure_;
};

}  // namespace

Napi::Function ChatTemplateWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeChatTemplate",
                     {
                         InstanceMethod<&ChatTemplateWrap::Apply>("apply"),
                         InstanceMethod<&ChatTemplateWrap::Source>("source"),
                     });
}

ChatTemplateWrap::ChatTemplateWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ChatTemplateWrap>(info), state_(std::make_shared<State>()) {
  Napi::Env env = info.Env();
  Args args(info);
  Options options(env, args.OptionalObject(1, "options"), "options");
  state_->custom = options.String("template").value_or("");
  state_->bos = options.String("bosToken").value_or("");
  state_->eos = options.String("eosToken").value_or("");
  const bool hasModel = !args.IsMissing(0) && !info[0].IsNull();
  if (hasModel) {
    state_->model = ModelWrap::HandleOf(env, info[0]);
    state_->modelTemplate = compat::ModelChatTemplate(state_->model->model.get());
  } else if (state_->custom.empty()) {
    Throw(env, "ERR_INVALID_ARGUMENT", "options.template must be a non-empty template string when there is no model");
  }
}

ChatTemplateWrap::~ChatTemplateWrap() = default;

Napi::Value ChatTemplateWrap::Apply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  if (args.IsMissing(0) || !info[0].IsArray()) Throw(env, "ERR_INVALID_ARGUMENT", "messages must be an array");
  Napi::Array array = info[0].As<Napi::Array>();
  if (array.Length() > kMaxMessages) Throw(env, "ERR_INVALID_ARGUMENT", "messages holds too many items");
  std::vector<Message> messages;
  messages.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    const std::string name = "messages[" + std::to_string(i) + "]";
    if (!item.IsObject() || item.IsArray()) Throw(env, "ERR_INVALID_ARGUMENT", name + " must be an object { role, content }");
    Options fields(env, item.As<Napi::Object>(), name);
    auto role = fields.String("role");
    auto content = fields.String("content");
    if (!role || role->empty()) Throw(env, "ERR_INVALID_ARGUMENT", name + ".role must be a non-empty string");
    if (!content) Throw(env, "ERR_INVALID_ARGUMENT", name + ".content must be a string");
    Message msg;
    msg.role = std::move(*role);
    msg.content = std::move(*content);
    ReadMessageExtras(env, fields, name, msg);
    messages.push_back(std::move(msg));
  }
  Options options(env, args.OptionalObject(1, "options"), "options");
  const bool addGenerationPrompt = options.Bool("addGenerationPrompt").value_or(true);
  const std::string engine = options.String("engine").value_or("jinja");
  if (engine != "jinja" && engine != "builtin") options.Fail("engine", "\"jinja\" or \"builtin\"");
  const bool jinja = engine == "jinja";
  ToolInputs tools = ReadToolInputs(env, options);
  if (tools.any && !jinja) Throw(env, "ERR_INVALID_ARGUMENT", "Tools and thinking options need the Jinja engine");
  std::map<std::string, std::string> kwargs;
  if (auto object = options.Object("kwargs")) {
    Napi::Array keys = object->GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      const std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = object->Get(key);
      if (!v.IsString()) Throw(env, "ERR_INVALID_ARGUMENT", "options.kwargs." + key + " must be a JSON string");
      kwargs[key] = v.As<Napi::String>().Utf8Value();
    }
  }
  SyncCommonLogLevel();
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* worker = new RenderWorker(env, state_, std::move(messages), addGenerationPrompt, jinja, std::move(kwargs),
                                  std::move(tools), deferred);
  worker->Queue();
  return deferred.Promise();
}

Napi::Value ChatTemplateWrap::Source(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), state_->custom.empty() ? state_->modelTemplate : state_->custom);
}

Napi::Value BuiltinChatTemplates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> names = compat::ChatBuiltinTemplates();
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, names[i]));
  return out;
}

}  // namespace llama_napi
