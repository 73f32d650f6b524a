# Cross-compiling the win32-x64 prebuild on Linux with Debian's mingw-w64, POSIX threads variant
# (apt-get install g++-mingw-w64-x86-64-posix): std::thread and std::mutex need it.
#   npm run prebuilds -- --target win32-x64        (scripts/prebuild.mjs passes this file)
# CMakeLists.txt does the rest for MinGW: the Node-API import library made from
# node-api-headers' node_api.def with dlltool, a static libgcc/libstdc++/winpthread in every DLL,
# and DLL names without the lib prefix (ggml-cpu-haswell.dll, as ggml's loader looks for).
# Another toolchain: LLAMA_NAPI_CROSS_PREFIX=<triple-> (default x86_64-w64-mingw32-, with the
# -posix compilers when they exist).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR AMD64)

if(DEFINED ENV{LLAMA_NAPI_CROSS_PREFIX})
  set(_llama_napi_prefix "$ENV{LLAMA_NAPI_CROSS_PREFIX}")
else()
  set(_llama_napi_prefix "x86_64-w64-mingw32-")
endif()
find_program(_llama_napi_gcc_posix "${_llama_napi_prefix}gcc-posix")
find_program(_llama_napi_gxx_posix "${_llama_napi_prefix}g++-posix")
if(_llama_napi_gcc_posix AND _llama_napi_gxx_posix)
  set(CMAKE_C_COMPILER "${_llama_napi_gcc_posix}")
  set(CMAKE_CXX_COMPILER "${_llama_napi_gxx_posix}")
else()
  set(CMAKE_C_COMPILER "${_llama_napi_prefix}gcc")
  set(CMAKE_CXX_COMPILER "${_llama_napi_prefix}g++")
endif()
set(CMAKE_RC_COMPILER "${_llama_napi_prefix}windres")
set(CMAKE_DLLTOOL "${_llama_napi_prefix}dlltool")

if(DEFINED ENV{LLAMA_NAPI_CROSS_SYSROOT})
  set(CMAKE_FIND_ROOT_PATH "$ENV{LLAMA_NAPI_CROSS_SYSROOT}")
else()
  set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
