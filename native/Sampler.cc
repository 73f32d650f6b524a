#include "Sampler.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <cstring>

#include "common.h"
#include "json-schema-to-grammar.h"
#include "log.h"

namespace llama_napi {
namespace {

constexpr double kMaxFloat = 1e30;

// The default order of the filtering samplers, as in llama.cpp's common sampler.
const std::vector<std::string> kDefaultOrder = {"penalties", "dry", "topNSigma", "topK", "typicalP",
                                                "topP", "minP", "xtc", "temperature"};

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

void AddDry(Napi::Env env, llama_sampler* chain, const llama_vocab* vocab, const Options& o, int32_t contextSize) {
  std::optional<Napi::Object> dryObj = o.Object("dry");
  if (!dryObj) return;
  Options d(env, *dryObj, "sampling.dry");
  float multiplier = static_cast<float>(d.Number("multiplier", 0, kMaxFloat).value_or(0.8));
  float base = static_cast<float>(d.Number("base", 1, kMaxFloat).value_or(1.75));
  int32_t allowed = static_cast<int32_t>(d.Int("allowedLength", 0, 1 << 20).value_or(2));
  int32_t lastN = static_cast<int32_t>(d.Int("penaltyLastN", -1, 1 << 24).value_or(-1));
  if (lastN < 0) lastN = contextSize;
  std::vector<std::string> breakers = d.StringArray("sequenceBreakers", 64).value_or(
      std::vector<std::string>{"\n", ":", "\"", "*"});
  std::vector<const char*> cbreakers;
  for (const auto& b : breakers) cbreakers.push_back(b.c_str());
  llama_sampler_chain_add(chain, llama_sampler_init_dry(vocab, multiplier, base, allowed, lastN, cbreakers.data(), cbreakers.size()));
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

  const double temperature = o.Number("temperature", 0, kMaxFloat).value_or(0.8);
  const int64_t topK = o.Int("topK", 0, nVocab).value_or(40);
  const double topP = o.Number("topP", 0, 1).value_or(0.95);
  const double minP = o.Number("minP", 0, 1).value_or(0.05);
  const double typicalP = o.Number("typicalP", 0, 1).value_or(1.0);
  const double topNSigma = o.Number("topNSigma", -1, kMaxFloat).value_or(-1);
  const double dynaRange = o.Number("dynamicTemperatureRange", 0, kMaxFloat).value_or(0);
  const double dynaExp = o.Number("dynamicTemperatureExponent", 0, kMaxFloat).value_or(1);
  const double repeatPenalty = o.Number("repeatPenalty", 0, kMaxFloat).value_or(1.0);
  const double frequencyPenalty = o.Number("frequencyPenalty", -kMaxFloat, kMaxFloat).value_or(0);
  const double presencePenalty = o.Number("presencePenalty", -kMaxFloat, kMaxFloat).value_or(0);
  int64_t penaltyLastN = o.Int("penaltyLastN", -1, 1 << 24).value_or(64);
  if (penaltyLastN < 0) penaltyLastN = contextSize;
  const int64_t minKeep = o.Int("minKeep", 0, nVocab).value_or(0);
  const uint32_t seed = SeedOf(o);
  if (repeatPenalty <= 0) Throw(env, "ERR_INVALID_ARGUMENT", "sampling.repeatPenalty must be > 0 (1 disables it)");

  double xtcProbability = 0, xtcThreshold = 0.1;
  if (std::optional<Napi::Object> xtc = o.Object("xtc")) {
    Options x(env, *xtc, "sampling.xtc");
    xtcProbability = x.Number("probability", 0, 1).value_or(0);
    xtcThreshold = x.Number("threshold", 0, 1).value_or(0.1);
  }
  int64_t mirostat = 0;
  double mirostatTau = 5.0, mirostatEta = 0.1;
  if (std::optional<Napi::Object> m = o.Object("mirostat")) {
    Options mo(env, *m, "sampling.mirostat");
    mirostat = mo.Int("version", 1, 2).value_or(2);
    mirostatTau = mo.Number("tau", 0, kMaxFloat).value_or(5.0);
    mirostatEta = mo.Number("eta", 0, kMaxFloat).value_or(0.1);
  }
  std::vector<std::string> order = o.StringArray("order", 16).value_or(kDefaultOrder);
  std::vector<llama_logit_bias> bias = LogitBias(env, o, vocab);

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  Sampling out;
  out.chain.reset(llama_sampler_chain_init(cp));
  llama_sampler* chain = out.chain.get();

  std::optional<std::string> grammar = o.String("grammar");
  if (std::optional<std::string> schema = o.String("jsonSchema")) {
    if (grammar) Throw(env, "ERR_INVALID_ARGUMENT", "Pass either grammar or jsonSchema, not both");
    grammar = SchemaToGrammar(env, *schema);
  }
  if (grammar) {
    std::string root = o.String("grammarRoot").value_or("root");
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
    AddDry(env, chain, vocab, o, contextSize);
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
      AddDry(env, chain, vocab, o, contextSize);
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
