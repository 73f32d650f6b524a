#include "Rpc.h"

#include <ggml-rpc.h>
#include <ggml-backend-impl.h>
#include <ggml.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <mutex>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>  // ExitThread
#else
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace llama_napi {
namespace {

constexpr uint8_t kRpcHello = 14;        // RPC_CMD_HELLO, fixed by the protocol
constexpr size_t kConnCapsSize = 24;     // RPC_CONN_CAPS_SIZE (ggml-rpc/transport.h)

// Models with layers on RPC servers.
std::mutex g_modelsMu;
std::vector<std::weak_ptr<ModelHandle>> g_rpcModels;

// The JS callback for RPC failures (one per process: the first env that sets it).
std::mutex g_handlerMu;
Napi::ThreadSafeFunction g_handler;
bool g_hasHandler = false;

ggml_backend_reg_t RpcReg() { return ggml_backend_reg_by_name("RPC"); }

bool SplitEndpoint(const std::string& endpoint, std::string& host, std::string& port) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size()) return false;
  host = endpoint.substr(0, colon);
  port = endpoint.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return port.find_first_not_of("0123456789") == std::string::npos;
}

#ifndef _WIN32
class Socket {
 public:
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  int fd_ = -1;
};

bool WaitFor(int fd, short events, int timeoutMs) {
  pollfd p{fd, events, 0};
  return poll(&p, 1, timeoutMs) == 1 && (p.revents & events) != 0;
}

bool SendAll(int fd, const void* data, size_t n, int timeoutMs) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    if (!WaitFor(fd, POLLOUT, timeoutMs)) return false;
    const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool RecvAll(int fd, void* data, size_t n, int timeoutMs) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    if (!WaitFor(fd, POLLIN, timeoutMs)) return false;
    const ssize_t k = recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}
#endif

[[noreturn]] void EndThisThread() {
#ifdef _WIN32
  ExitThread(1);
#else
  pthread_exit(nullptr);
#endif
}

void OnGgmlAbort(const char* message) {
  const bool rpc = std::strstr(message, "RPC") != nullptr || std::strstr(message, "rpc") != nullptr;
  std::fprintf(stderr, "%s\n", message);
  if (!rpc) return;  // ggml_abort() aborts the process after this
  {
    std::lock_guard<std::mutex> lk(g_modelsMu);
    for (auto& weak : g_rpcModels) {
      if (auto model = weak.lock()) model->broken = true;
    }
  }
  {
    std::lock_guard<std::mutex> lk(g_handlerMu);
    if (g_hasHandler) {
      auto* text = new std::string(message);
      if (g_handler.NonBlockingCall(text, [](Napi::Env env, Napi::Function fn, std::string* msg) {
            fn.Call({Napi::String::New(env, *msg)});
            delete msg;
          }) != napi_ok) {
        delete text;
      }
    }
  }
  // The thread that hit the failure (ggml-rpc's connection thread, or a thread waiting on it)
  // ends here instead of taking the process down. Work waiting on it never completes: the JS
  // side fails it with ERR_RPC on the notification above.
  EndThisThread();
}

// The memory a server advertises (--mem): a copy of the CPU device whose get_memory reports it.
size_t g_advertisedBytes = 0;
void AdvertisedMemory(ggml_backend_dev_t, size_t* free, size_t* total) {
  *free = g_advertisedBytes;
  *total = g_advertisedBytes;
}

void RpcServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info);
  const std::string endpoint = args.String(0, "endpoint");
  const int64_t threads = args.Int(1, "threads", 1, 1024);
  const int64_t memoryMiB = args.Int(2, "memoryMiB", 0, int64_t{1} << 30);
  std::string host, port;
  if (!SplitEndpoint(endpoint, host, port)) Throw(env, "ERR_INVALID_ARGUMENT", "endpoint must be host:port, not " + endpoint);
  ggml_backend_reg_t reg = RpcReg();
  auto* start = reg != nullptr ? reinterpret_cast<decltype(ggml_backend_rpc_start_server)*>(
                                     ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_start_server"))
                               : nullptr;
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (start == nullptr || cpu == nullptr) Throw(env, "ERR_UNSUPPORTED", "This build has no RPC backend");
  static ggml_backend_device limited;
  if (memoryMiB > 0) {
    limited = *cpu;
    limited.iface.get_memory = &AdvertisedMemory;
    g_advertisedBytes = static_cast<size_t>(memoryMiB) * 1024 * 1024;
    cpu = &limited;
  }
  // Blocks for good: the rpc-server command runs in its own process.
  start(endpoint.c_str(), nullptr, static_cast<size_t>(threads), 1, &cpu);
}

class ProbeWorker : public Napi::AsyncWorker {
 public:
  ProbeWorker(Napi::Env env, std::string endpoint, int timeoutMs, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "llama-napi:rpcProbe"), endpoint_(std::move(endpoint)), timeoutMs_(timeoutMs), deferred_(deferred) {}
  void Execute() override { failure_ = ProbeRpcServer(endpoint_, timeoutMs_); }
  void OnOK() override {
    if (failure_.ok()) deferred_.Resolve(Env().Undefined());
    else deferred_.Reject(MakeError(Env(), failure_.code, failure_.message).Value());
  }

 private:
  std::string endpoint_;
  int timeoutMs_;
  Napi::Promise::Deferred deferred_;
  Failure failure_;
};

Napi::Value RpcProbe(const Napi::CallbackInfo& info) {
  Args args(info);
  const std::string endpoint = args.String(0, "endpoint");
  const int timeoutMs = static_cast<int>(args.Int(1, "timeoutMs", 1, 600000));
  auto deferred = Napi::Promise::Deferred::New(info.Env());
  (new ProbeWorker(info.Env(), endpoint, timeoutMs, deferred))->Queue();
  return deferred.Promise();
}

void SetRpcFailureHandler(const Napi::CallbackInfo& info) {
  Napi::Function fn = Args(info).Function(0, "handler");
  std::lock_guard<std::mutex> lk(g_handlerMu);
  if (g_hasHandler) return;  // one per process (the first environment that asks)
  g_handler = Napi::ThreadSafeFunction::New(info.Env(), fn, "llama-napi:rpcFailure", 0, 1);
  g_handler.Unref(info.Env());
  g_hasHandler = true;
}

}  // namespace

Failure ProbeRpcServer(const std::string& endpoint, int timeoutMs) {
  std::string host, port;
  if (!SplitEndpoint(endpoint, host, port)) {
    return {"ERR_INVALID_ARGUMENT", "RPC server \"" + endpoint + "\" is not host:port"};
  }
#ifdef _WIN32
  return {};
#else
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    return {"ERR_RPC", "Cannot resolve the RPC server address " + endpoint};
  }
  Socket s;
  s.fd_ = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  bool connected = false;
  if (s.fd_ >= 0) {
    fcntl(s.fd_, F_SETFL, fcntl(s.fd_, F_GETFL) | O_NONBLOCK);
    const int r = connect(s.fd_, found->ai_addr, found->ai_addrlen);
    if (r == 0 || (errno == EINPROGRESS && WaitFor(s.fd_, POLLOUT, timeoutMs))) {
      int err = 0;
      socklen_t len = sizeof(err);
      connected = getsockopt(s.fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  freeaddrinfo(found);
  if (!connected) return {"ERR_RPC", "Cannot connect to the RPC server at " + endpoint + " (is `llama-napi rpc-server` running there?)"};
  uint8_t request[1 + 8 + kConnCapsSize] = {kRpcHello};
  const uint64_t size = kConnCapsSize;
  std::memcpy(request + 1, &size, sizeof(size));
  uint64_t replySize = 0;
  uint8_t reply[4 + kConnCapsSize];
  if (!SendAll(s.fd_, request, sizeof(request), timeoutMs) || !RecvAll(s.fd_, &replySize, sizeof(replySize), timeoutMs)) {
    return {"ERR_RPC", "The RPC server at " + endpoint + " did not answer the handshake within " + std::to_string(timeoutMs) + " ms"};
  }
  if (replySize != sizeof(reply) || !RecvAll(s.fd_, reply, sizeof(reply), timeoutMs)) {
    return {"ERR_RPC", "The server at " + endpoint + " does not speak this version of the ggml RPC protocol"};
  }
  if (reply[0] != RPC_PROTO_MAJOR_VERSION || reply[1] > RPC_PROTO_MINOR_VERSION) {
    return {"ERR_RPC", "The RPC server at " + endpoint + " speaks protocol " + std::to_string(reply[0]) + "." +
                           std::to_string(reply[1]) + "." + std::to_string(reply[2]) + "; this build needs " +
                           std::to_string(RPC_PROTO_MAJOR_VERSION) + "." + std::to_string(RPC_PROTO_MINOR_VERSION) +
                           ". Run the same llama-napi version on both sides."};
  }
  return {};
#endif
}

Failure RpcDevices(const std::string& endpoint, std::vector<ggml_backend_dev_t>& out) {
  ggml_backend_reg_t reg = RpcReg();
  auto* add = reg != nullptr ? reinterpret_cast<decltype(ggml_backend_rpc_add_server)*>(
                                   ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server"))
                             : nullptr;
  if (add == nullptr) return {"ERR_UNSUPPORTED", "This build of llama-napi has no RPC backend"};
  ggml_backend_reg_t server = add(endpoint.c_str());
  if (server == nullptr || ggml_backend_reg_dev_count(server) == 0) {
    return {"ERR_RPC", "The RPC server at " + endpoint + " offers no device"};
  }
  for (size_t i = 0; i < ggml_backend_reg_dev_count(server); i++) out.push_back(ggml_backend_reg_dev_get(server, i));
  return {};
}

void InstallAbortHook() { ggml_set_abort_callback(&OnGgmlAbort); }

void TrackRpcModel(const std::shared_ptr<ModelHandle>& model) {
  std::lock_guard<std::mutex> lk(g_modelsMu);
  g_rpcModels.erase(std::remove_if(g_rpcModels.begin(), g_rpcModels.end(), [](const auto& w) { return w.expired(); }),
                    g_rpcModels.end());
  g_rpcModels.push_back(model);
}

void RegisterRpc(Napi::Env env, Napi::Object exports) {
  exports.Set("rpcServe", Napi::Function::New<RpcServe>(env, "rpcServe"));
  exports.Set("rpcProbe", Napi::Function::New<RpcProbe>(env, "rpcProbe"));
  exports.Set("setRpcFailureHandler", Napi::Function::New<SetRpcFailureHandler>(env, "setRpcFailureHandler"));
}

}  // namespace llama_napi
