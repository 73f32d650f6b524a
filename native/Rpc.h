// ggml's RPC backend: running a server, checking servers before they are used, and containing
// the failures that ggml-rpc reports by aborting the process.
#pragma once

#include <ggml-backend.h>
#include <napi.h>

#include <string>
#include <vector>

#include "Model.h"
#include "common.h"

namespace llama_napi {

// Connects to `endpoint` (host:port) and performs the RPC HELLO handshake within `timeoutMs`:
// unreachable servers and other protocol versions become ERR_RPC here, before ggml-rpc (which
// aborts the process on them) sees the endpoint.
Failure ProbeRpcServer(const std::string& endpoint, int timeoutMs);

// The devices an RPC server offers (after a successful probe). They are not registered with
// ggml, so only models that name them use them.
Failure RpcDevices(const std::string& endpoint, std::vector<ggml_backend_dev_t>& out);

// Remembers a model with layers on RPC servers: an RPC failure marks it broken (see ModelHandle).
void TrackRpcModel(const std::shared_ptr<ModelHandle>& model);

// Installs the process-wide ggml abort hook: an abort raised by ggml-rpc (a server that
// crashed, disconnected or answered nonsense) ends only the thread that raised it, and is
// reported to JS through the handler set with setRpcFailureHandler(). Other aborts abort as
// before. Called once at startup.
void InstallAbortHook();

// Module functions: rpcServe(endpoint, threads) blocks and serves (for the rpc-server CLI);
// rpcProbe(endpoint, timeoutMs) -> Promise; setRpcFailureHandler(fn).
void RegisterRpc(Napi::Env env, Napi::Object exports);

}  // namespace llama_napi
