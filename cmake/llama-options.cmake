# llama.cpp / ggml build options, shared by the addon (CMakeLists.txt) and by the benchmark
# build of llama-bench (scripts/bench/build-llama-tools.mjs), so both use the same compile flags.

set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
# common: json-schema-to-grammar (JSON Schema output) and the Jinja chat-template engine.
set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_APP OFF CACHE BOOL "" FORCE)
set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
# ggml's own thread pool instead of OpenMP: no libgomp at run time, and no OpenMP threads
# spinning beside Node's event loop.
set(GGML_OPENMP OFF CACHE BOOL "" FORCE)
set(GGML_CCACHE OFF CACHE BOOL "" FORCE)
# Source builds are tuned for the machine that builds them; prebuilt binaries use runtime
# dispatch instead (see the prebuild scripts).
if(NOT DEFINED GGML_NATIVE)
  set(GGML_NATIVE ON CACHE BOOL "")
endif()
