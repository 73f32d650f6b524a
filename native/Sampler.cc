#include "Sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <cstring>

#include "common.h"
#include "json-schema-to-grammar.h"
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
  const int64_t topK = o.Required(o.Int("topK", 0, nVocab), "topK");
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
  o.CheckAllRead();

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  Sampling out;
  out.chain.reset(llama_sampler_chain_init(cp));
  llama_sampler* chain = out.chain.get();

  if (schema) {
    if (grammar) Throw(env, "ERR_INVALID_ARGUMENT", "Pass either grammar or jsonSchema, not both");
    grammar = SchemaToGrammar(env, *schema);
  }
  if (grammar) {
    LogCapture capture;
    out.grammar.reset(llama_sampler_init_grammar(vocab, grammar->c_str(), root.c_str()));
    if (!out.grammar) {
      Throw(env, "ERR_GRAMMAR_INVALID", "The grammar does not parse: " + capture.Text());
    }
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
