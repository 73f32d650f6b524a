// Test helper for tests/isolation.test.ts, preloaded (--import) into the child process of
// examples/isolated-generate.mjs: when LLAMA_NAPI_TEST_ABORT_CHILD=1, the child calls
// process.abort() as soon as its request arrives, as a process would that llama.cpp or ggml ends
// with an assert. Nothing outside this test sets the variable.
if (process.env.LLAMA_NAPI_TEST_ABORT_CHILD === "1") {
  process.once("message", () => process.abort());
}
