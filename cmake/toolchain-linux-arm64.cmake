# Cross-compiling the linux-arm64 prebuild on an x86-64 Linux machine with Debian's aarch64
# toolchain (apt-get install g++-aarch64-linux-gnu libc6-arm64-cross libstdc++6-arm64-cross).
#   npm run prebuilds -- --target linux-arm64      (scripts/prebuild.mjs passes this file)
# Another toolchain: LLAMA_NAPI_CROSS_PREFIX=<triple-> (e.g. /opt/gcc-14/bin/aarch64-linux-gnu-)
# and LLAMA_NAPI_CROSS_SYSROOT=<dir> in the environment.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(DEFINED ENV{LLAMA_NAPI_CROSS_PREFIX})
  set(_llama_napi_prefix "$ENV{LLAMA_NAPI_CROSS_PREFIX}")
else()
  set(_llama_napi_prefix "aarch64-linux-gnu-")
endif()
set(CMAKE_C_COMPILER "${_llama_napi_prefix}gcc")
set(CMAKE_CXX_COMPILER "${_llama_napi_prefix}g++")

if(DEFINED ENV{LLAMA_NAPI_CROSS_SYSROOT})
  set(CMAKE_FIND_ROOT_PATH "$ENV{LLAMA_NAPI_CROSS_SYSROOT}")
else()
  set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
endif()
# Programs from the build machine; libraries, headers and packages only from the target's root.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# try_run() checks, if any, run under qemu-user (Debian's qemu-user) when it is installed.
find_program(LLAMA_NAPI_QEMU_AARCH64 qemu-aarch64)
if(LLAMA_NAPI_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${LLAMA_NAPI_QEMU_AARCH64};-L;${CMAKE_FIND_ROOT_PATH}")
endif()
