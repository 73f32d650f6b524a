#include "Sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <cctype>
#include <cstring>
#include <exception>

#include "common.h"
#include "json-schema-to-grammar.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <common.h>            // regex_escape (llama.cpp's common/common.h)
#include <reasoning-budget.h>  // common_reasoning_budget_init
#pragma GCC diagnostic pop
#include "log.h"

namespace llama_napi {
namespace {

// Values, ranges and defaults are checked and filled in by src/options/sampling.ts (the table of
// sampling options); here they are read as they come, with the type checks of Options and the
// checks that need the model (token ids against the vocabulary).
constexpr double kMaxFloat = 1e30;

uint32_t SeedOf(const Options& o) {
  std::optional<int64_t> seed = o.Int("seed", 0, 0xFFFFFFFFLL);
  return seed ? static_cast<uint32_t>(*seed) : LLAMA_DEFAULT_SEED;
}

std::vector<llama_logit_bias> LogitBias(Napi::Env env, const Options& o, const llama_vocab* vocab) {
  std::vector<llama_logit_bias> out;
  std::optional<Napi::Value> raw = o.Raw("logitBias");
  if (!raw) return out;
  if (!raw->IsArray()) o.Fail("logitBias", "an array of [token, bias] pairs");
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  Napi::Array arr = raw->As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value pair = arr.Get(i);
    if (!pair.IsArray() || pair.As<Napi::Array>().Length() != 2) o.Fail("logitBias", "an array of [token, bias] pairs");
    Napi::Value t = pair.As<Napi::Array>().Get(0u);
    Napi::Value b = pair.As<Napi::Array>().Get(1u);
    if (!t.IsNumber() || !b.IsNumber()) o.Fail("logitBias", "an array of [token, bias] pairs");
    double token = t.As<Napi::Number>().DoubleValue();
    float bias = b.As<Napi::Number>().FloatValue();
    if (!(token >= 0 && token < nVocab) || std::floor(token) != token) {
      Throw(env, "ERR_TOKEN_INVALID", "logitBias names token " + std::to_string(token) + ", outside 0.." + std::to_string(nVocab - 1));
    }
    if (std::isnan(bias)) Throw(env, "ERR_INVALID_ARGUMENT", "logitBias values must be numbers or -Infinity, not NaN");
    out.push_back({static_cast<llama_token>(token), bias});
  }
  return out;
}

struct DrySettings {
  float multiplier = 0, base = 0;
  int32_t allowed = 0, lastN = 0;
  std::vector<std::string> breakers;
};

std::optional<DrySettings> ReadDry(Napi::Env env, const Options& o, int32_t contextSize) {
  std::optional<Napi::Object> dryObj = o.Object("dry");
  if (!dryObj) return std::nullopt;
  Options d(env, *dryObj, "sampling.dry");
  DrySettings s;
  s.multiplier = static_cast<float>(d.Required(d.Number("multiplier", 0, kMaxFloat), "multiplier"));
  s.base = static_cast<float>(d.Required(d.Number("base", 1, kMaxFloat), "base"));
  s.allowed = static_cast<int32_t>(d.Required(d.Int("allowedLength", 0, 1 << 20), "allowedLength"));
  s.lastN = static_cast<int32_t>(d.Required(d.Int("penaltyLastN", -1, 1 << 24), "penaltyLastN"));
  if (s.lastN < 0) s.lastN = contextSize;
  s.breakers = d.Required(d.StringArray("sequenceBreakers", 64), "sequenceBreakers");
  d.CheckAllRead();
  if (s.multiplier <= 0) return std::nullopt;  // 0 disables DRY
  return s;
}

void AddDry(llama_sampler* chain, const llama_vocab* vocab, const std::optional<DrySettings>& dry) {
  if (!dry) return;
  std::vector<const char*> cbreakers;
  for (const auto& b : dry->breakers) cbreakers.push_back(b.c_str());
  llama_sampler_chain_add(chain, llama_sampler_init_dry(vocab, dry->multiplier, dry->base, dry->allowed, dry->lastN,
                                                        cbreakers.data(), cbreakers.size()));
}

// JSON Schema → GBNF with llama.cpp's own converter (common/json-schema-to-grammar).
std::string SchemaToGrammar(Napi::Env env, const std::string& schema) {
  try {
    return json_schema_to_grammar(common_json::parse(schema));
  } catch (const std::exception& e) {
    Throw(env, "ERR_GRAMMAR_INVALID", std::string("The JSON schema cannot be turned into a grammar: ") + e.what());
  }
}

// A lazy grammar's triggers ({ type, value }[] from a chat render), as llama.cpp's common sampler
// reads them: a word that is one special token triggers on that token, any other word on its
// text; patterns are regular expressions over the generated text ("patternFull": the whole of it).
struct Triggers {
  std::vector<std::string> patterns;
  std::vector<llama_token> tokens;
};

Triggers ReadTriggers(Napi::Env env, const Options& o, const llama_vocab* vocab) {
  Triggers out;
  std::optional<Napi::Value> raw = o.Raw("grammarTriggers");
  if (!raw) return out;
  const char* expected = "an array of { type: \"word\" | \"pattern\" | \"patternFull\" | \"token\", value }";
  if (!raw->IsArray()) o.Fail("grammarTriggers", expected);
  Napi::Array arr = raw->As<Napi::Array>();
  if (arr.Length() > 1024) o.Fail("grammarTriggers", "an array of at most 1024 triggers");
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject() || item.IsArray()) o.Fail("grammarTriggers", expected);
    Options t(env, item.As<Napi::Object>(), "sampling.grammarTriggers[" + std::to_string(i) + "]");
    const std::string type = t.Required(t.String("type"), "type");
    const std::string value = t.Required(t.String("value"), "value");
    t.CheckAllRead();
    if (type == "pattern") {
      out.patterns.push_back(value);
    } else if (type == "patternFull") {
      out.patterns.push_back(value.empty() ? "^$"
                                           : (value.front() != '^' ? "^" : "") + value + (value.back() != '$' ? "$" : ""));
    } else if (type == "word" || type == "token") {
      std::vector<llama_token> ids;
      const bool one = compat::Tokenize(vocab, value, false, true, ids) == compat::TokenizeStatus::kOk && ids.size() == 1;
      const bool special = one && (llama_vocab_get_attr(vocab, ids[0]) &
                                   (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED)) != 0;
      if (special) {
        out.tokens.push_back(ids[0]);
      } else if (type == "token") {
        Throw(env, "ERR_TOKEN_INVALID", "The grammar trigger token \"" + value + "\" is not a special token of this model");
      } else {
        out.patterns.push_back(regex_escape(value));
      }
    } else {
      t.Fail("type", "\"word\", \"pattern\", \"patternFull\" or \"token\"");
    }
  }
  return out;
}

std::vector<llama_token> TokensOf(Napi::Env env, const llama_vocab* vocab, const std::string& text) {
  std::vector<llama_token> ids;
  if (compat::Tokenize(vocab, text, false, true, ids) != compat::TokenizeStatus::kOk) {
    Throw(env, "ERR_INVALID_ARGUMENT", "sampling.reasoningBudget holds a text that cannot be tokenized");
  }
  return ids;
}

// llama.cpp's reasoning-budget sampler (common/reasoning-budget), advanced past the prompt's
// `prefill` (a generation prompt that opens the thinking block); nullptr when there is no budget.
llama_sampler* ReadReasoningBudget(Napi::Env env, const Options& o, const llama_vocab* vocab) {
  std::optional<Napi::Object> raw = o.Object("reasoningBudget");
  if (!raw) return nullptr;
  Options b(env, *raw, "sampling.reasoningBudget");
  const int64_t tokens = b.Required(b.Int("tokens", -1, 1 << 24), "tokens");
  const std::string start = b.Required(b.String("start"), "start");
  const std::vector<std::string> end = b.Required(b.StringArray("end", 16), "end");
  const std::string message = b.Required(b.String("message"), "message");
  const std::string prefill = b.Required(b.String("prefill"), "prefill");
  b.CheckAllRead();
  if (tokens < 0) return nullptr;
  if (start.empty() || end.empty() || end[0].empty()) {
    Throw(env, "ERR_INVALID_ARGUMENT", "sampling.reasoningBudget needs the start and end texts of the thinking block");
  }
  std::vector<llama_tokens> ends;
  for (const auto& e : end) ends.push_back(TokensOf(env, vocab, e));
  const llama_tokens forced = TokensOf(env, vocab, message + end[0]);
  // A prefill that ends with the start tag (a generation prompt that opens the block) starts the
  // count at once: its tokens need not tokenize the tag as the tag alone does (text-level tags).
  std::string trimmed = prefill;
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) trimmed.pop_back();
  const bool open = trimmed.size() >= start.size() && trimmed.compare(trimmed.size() - start.size(), start.size(), start) == 0;
  const llama_tokens prefillTokens = open ? llama_tokens{} : TokensOf(env, vocab, prefill);
  llama_sampler* s = nullptr;
  try {
    s = common_reasoning_budget_init(vocab, {TokensOf(env, vocab, start)}, ends, forced, static_cast<int32_t>(tokens),
                                     open ? REASONING_BUDGET_COUNTING : REASONING_BUDGET_IDLE);
    for (llama_token t : prefillTokens) llama_sampler_accept(s, t);
  } catch (const std::exception& e) {
    if (s != nullptr) llama_sampler_free(s);
    Throw(env, "ERR_INVALID_ARGUMENT", std::string("llama.cpp's reasoning budget sampler refused its settings: ") + e.what());
  }
  return s;
}

bool IsGreedyOnly(llama_sampler* chain) {
  if (llama_sampler_chain_n(chain) != 1) return false;
  const char* name = llama_sampler_name(llama_sampler_chain_get(chain, 0));
  return name != nullptr && std::strcmp(name, "greedy") == 0;
}

}  // namespace

Sampling BuildSampler(Napi::Env env, const llama_model* model, Napi::Object config, int32_t contextSize) {
  const llama_vocab* vocab = compat::Vocab(model);
  const int32_t nVocab = llama_vocab_n_tokens(vocab);
  Options o(env, config, "sampling");

  const double temperature = o.Required(o.Number("temperature", 0, kMaxFloat), "temperature");
  // A topK past the vocabulary keeps every token (as llama.cpp's top-k does with more than its
  // candidates): the default 40 also works with a vocabulary smaller than that.
  const int64_t topK = std::min<int64_t>(o.Required(o.Int("topK", 0, std::numeric_limits<int32_t>::max()), "topK"), nVocab);
  const double topP = o.Required(o.Number("topP", 0, 1), "topP");
  const double minP = o.Required(o.Number("minP", 0, 1), "minP");
  const double typicalP = o.Required(o.Number("typicalP", 0, 1), "typicalP");
  const double topNSigma = o.Required(o.Number("topNSigma", -kMaxFloat, kMaxFloat), "topNSigma");
  const double dynaRange = o.Required(o.Number("dynamicTemperatureRange", 0, kMaxFloat), "dynamicTemperatureRange");
  const double dynaExp = o.Required(o.Number("dynamicTemperatureExponent", 0, kMaxFloat), "dynamicTemperatureExponent");
  const double repeatPenalty = o.Required(o.Number("repeatPenalty", 0, kMaxFloat), "repeatPenalty");
  const double frequencyPenalty = o.Required(o.Number("frequencyPenalty", -kMaxFloat, kMaxFloat), "frequencyPenalty");
  const double presencePenalty = o.Required(o.Number("presencePenalty", -kMaxFloat, kMaxFloat), "presencePenalty");
  int64_t penaltyLastN = o.Required(o.Int("penaltyLastN", -1, 1 << 24), "penaltyLastN");
  if (penaltyLastN < 0) penaltyLastN = contextSize;
  const int64_t minKeep = o.Required(o.Int("minKeep", 0, nVocab), "minKeep");
  const uint32_t seed = SeedOf(o);

  double xtcProbability = 0, xtcThreshold = 0;
  if (std::optional<Napi::Object> xtc = o.Object("xtc")) {
    Options x(env, *xtc, "sampling.xtc");
    xtcProbability = x.Required(x.Number("probability", 0, 1), "probability");
    xtcThreshold = x.Required(x.Number("threshold", 0, 1), "threshold");
    x.CheckAllRead();
  }
  int64_t mirostat = 0;
  double mirostatTau = 0, mirostatEta = 0;
  if (std::optional<Napi::Object> m = o.Object("mirostat")) {
    Options mo(env, *m, "sampling.mirostat");
    mirostat = mo.Required(mo.Int("version", 1, 2), "version");
    mirostatTau = mo.Required(mo.Number("tau", 0, kMaxFloat), "tau");
    mirostatEta = mo.Required(mo.Number("eta", 0, kMaxFloat), "eta");
    mo.CheckAllRead();
  }
  const std::optional<DrySettings> dry = ReadDry(env, o, contextSize);
  std::vector<std::string> order = o.Required(o.StringArray("samplerOrder", 16), "samplerOrder");
  std::vector<llama_logit_bias> bias = LogitBias(env, o, vocab);
  std::optional<std::string> grammar = o.String("grammar");
  const std::optional<std::string> schema = o.String("jsonSchema");
  const std::string root = o.Required(o.String("grammarRoot"), "grammarRoot");
  const bool lazy = o.Bool("grammarLazy").value_or(false);
  const Triggers triggers = ReadTriggers(env, o, vocab);
  const std::string prefill = o.String("grammarPrefill").value_or("");
  compat::SamplerPtr budget(ReadReasoningBudget(env, o, vocab));
  o.CheckAllRead();

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  Sampling out;
  out.chain.reset(llama_sampler_chain_init(cp));
  llama_sampler* chain = out.chain.get();
  // First in the chain, so that when it forces the closing tag every other token is out.
  if (budget) llama_sampler_chain_add(chain, budget.release());

  if (schema) {
    if (grammar) Throw(env, "ERR_INVALID_ARGUMENT", "Pass either grammar or jsonSchema, not both");
    grammar = SchemaToGrammar(env, *schema);
  }
  if (grammar) {
    LogCapture capture;
    if (lazy) {
      if (triggers.patterns.empty() && triggers.tokens.empty()) {
        Throw(env, "ERR_INVALID_ARGUMENT", "sampling.grammarLazy needs at least one of sampling.grammarTriggers");
      }
      std::vector<const char*> patterns;
      for (const auto& p : triggers.patterns) patterns.push_back(p.c_str());
      try {
        out.grammar.reset(llama_sampler_init_grammar_lazy_patterns(vocab, grammar->c_str(), root.c_str(), patterns.data(),
                                                                   patterns.size(), triggers.tokens.data(),
                                                                   triggers.tokens.size()));
      } catch (const std::exception& e) {  // std::regex rejects a trigger pattern
        Throw(env, "ERR_GRAMMAR_INVALID", std::string("A grammar trigger pattern is not a valid regular expression: ") + e.what());
      }
    } else {
      out.grammar.reset(llama_sampler_init_grammar(vocab, grammar->c_str(), root.c_str()));
    }
    if (!out.grammar) {
      Throw(env, "ERR_GRAMMAR_INVALID", "The grammar does not parse: " + capture.Text());
    }
    // A chat format's grammar starts at the assistant's generation prompt, which the template
    // already put in the prompt: the grammar is advanced past it (as llama.cpp's common sampler
    // does for tool-call grammars that are not lazy).
    if (!lazy && !prefill.empty()) {
      std::vector<llama_token> ids;
      if (compat::Tokenize(vocab, prefill, false, true, ids) != compat::TokenizeStatus::kOk) {
        Throw(env, "ERR_INVALID_ARGUMENT", "sampling.grammarPrefill cannot be tokenized");
      }
      try {
        for (size_t i = 0; i < ids.size(); i++) {
          const std::string piece = compat::TokenPiece(vocab, ids[i], true);
          if (i == 0 && !piece.empty() && std::isspace(static_cast<unsigned char>(piece[0])) &&
              !std::isspace(static_cast<unsigned char>(prefill[0]))) {
            continue;  // a space some tokenizers put before a first special token
          }
          llama_sampler_accept(out.grammar.get(), ids[i]);
        }
      } catch (const std::exception& e) {
        Throw(env, "ERR_GRAMMAR_INVALID", std::string("The grammar does not accept its generation prompt: ") + e.what());
      }
    }
  } else if (lazy || !triggers.patterns.empty() || !triggers.tokens.empty()) {
    Throw(env, "ERR_INVALID_ARGUMENT", "sampling.grammarLazy and sampling.grammarTriggers need a grammar");
  }
  if (!bias.empty()) {
    llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(nVocab, static_cast<int32_t>(bias.size()), bias.data()));
  }

  const bool penalties = repeatPenalty != 1.0 || frequencyPenalty != 0 || presencePenalty != 0;
  if (temperature <= 0 && mirostat == 0) {
    // Greedy: filters cannot change the arg-max, so only the samplers that move logits apply.
    if (penalties) {
      llama_sampler_chain_add(chain, llama_sampler_init_penalties(nVocab, static_cast<int32_t>(penaltyLastN),
                                                                        static_cast<float>(repeatPenalty),
                                                                        static_cast<float>(frequencyPenalty),
                                                                        static_cast<float>(presencePenalty)));
    }
    AddDry(chain, vocab, dry);
    llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    out.greedyOnly = IsGreedyOnly(chain);
    return out;
  }
  if (mirostat != 0) {
    llama_sampler_chain_add(chain, llama_sampler_init_temp(static_cast<float>(temperature)));
    llama_sampler_chain_add(chain, mirostat == 1
                                             ? llama_sampler_init_mirostat(nVocab, seed, static_cast<float>(mirostatTau),
                                                                           static_cast<float>(mirostatEta), 100)
                                             : llama_sampler_init_mirostat_v2(seed, static_cast<float>(mirostatTau),
                                                                              static_cast<float>(mirostatEta)));
    return out;
  }
  for (const std::string& name : order) {
    llama_sampler* s = nullptr;
    if (name == "penalties") {
      if (penalties) {
        s = llama_sampler_init_penalties(nVocab, static_cast<int32_t>(penaltyLastN), static_cast<float>(repeatPenalty),
                                         static_cast<float>(frequencyPenalty), static_cast<float>(presencePenalty));
      }
    } else if (name == "dry") {
      AddDry(chain, vocab, dry);
    } else if (name == "topNSigma") {
      if (topNSigma > 0) s = llama_sampler_init_top_n_sigma(static_cast<float>(topNSigma));
    } else if (name == "topK") {
      if (topK > 0) s = llama_sampler_init_top_k(static_cast<int32_t>(topK));
    } else if (name == "typicalP") {
      if (typicalP < 1.0) s = llama_sampler_init_typical(static_cast<float>(typicalP), static_cast<size_t>(minKeep));
    } else if (name == "topP") {
      if (topP < 1.0) s = llama_sampler_init_top_p(static_cast<float>(topP), static_cast<size_t>(minKeep));
    } else if (name == "minP") {
      if (minP > 0) s = llama_sampler_init_min_p(static_cast<float>(minP), static_cast<size_t>(minKeep));
    } else if (name == "xtc") {
      if (xtcProbability > 0) {
        s = llama_sampler_init_xtc(static_cast<float>(xtcProbability), static_cast<float>(xtcThreshold),
                                   static_cast<size_t>(minKeep), seed);
      }
    } else if (name == "temperature") {
      s = llama_sampler_init_temp_ext(static_cast<float>(temperature), static_cast<float>(dynaRange),
                                      static_cast<float>(dynaExp));
    } else {
      Throw(env, "ERR_INVALID_ARGUMENT",
            "sampling.order has an unknown sampler \"" + name +
                "\"; use penalties, dry, topNSigma, topK, typicalP, topP, minP, xtc, temperature");
    }
    if (s != nullptr) llama_sampler_chain_add(chain, s);
  }
  llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));
  return out;
}

}  // namespace llama_napi
