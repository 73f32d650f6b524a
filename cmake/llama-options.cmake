# llama.cpp / ggml build options, shared by the addon (CMakeLists.txt) and by the benchmark build
# of llama.cpp's own tools (bench/llama-tools/CMakeLists.txt), so both use the same compile flags.
#
#   LLAMA_NAPI_CPU_VARIANTS=ON   every x86-64 / arm64 CPU variant of ggml, chosen at run time
#                                (prebuilt binaries); OFF (default): one CPU backend tuned for
#                                the machine that builds it (-march=native), linked statically.
#   LLAMA_NAPI_BACKEND=cpu|cuda|vulkan|metal   (or the environment variable of the same name)
#                                an extra GPU backend, built as a module beside the CPU one.

option(LLAMA_NAPI_CPU_VARIANTS "Build every CPU variant of ggml and choose one at run time" OFF)
if(NOT DEFINED LLAMA_NAPI_BACKEND)
  if(DEFINED ENV{LLAMA_NAPI_BACKEND})
    set(LLAMA_NAPI_BACKEND "$ENV{LLAMA_NAPI_BACKEND}")
  elseif(APPLE)
    set(LLAMA_NAPI_BACKEND "metal")
  else()
    set(LLAMA_NAPI_BACKEND "cpu")
  endif()
endif()

# Two ways to build ggml:
#  - source builds (the default): static libraries, one CPU backend compiled for this machine
#    (-march=native) and linked into the addon;
#  - prebuilt binaries and GPU flavours: ggml and llama as shared libraries and every backend
#    (each CPU variant, CUDA, Vulkan) as a module the addon loads at run time from its folder,
#    so one binary serves old and new CPUs, with or without a GPU (a backend whose libraries or
#    device are missing is skipped). ggml does not allow -march=native in this mode.
if(LLAMA_NAPI_CPU_VARIANTS OR LLAMA_NAPI_BACKEND STREQUAL "cuda" OR LLAMA_NAPI_BACKEND STREQUAL "vulkan")
  set(LLAMA_NAPI_DYNAMIC_BACKENDS ON)
  set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)
  set(GGML_BACKEND_DL ON CACHE BOOL "" FORCE)
  set(GGML_NATIVE OFF CACHE BOOL "" FORCE)
  set(GGML_CPU_ALL_VARIANTS ${LLAMA_NAPI_CPU_VARIANTS} CACHE BOOL "" FORCE)
else()
  set(LLAMA_NAPI_DYNAMIC_BACKENDS OFF)
  set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
  set(GGML_BACKEND_DL OFF CACHE BOOL "" FORCE)
  set(GGML_NATIVE ON CACHE BOOL "" FORCE)
  set(GGML_CPU_ALL_VARIANTS OFF CACHE BOOL "" FORCE)
endif()

# Only the backend asked for: a build folder reconfigured for another backend must not keep the
# previous one switched on in its cache.
foreach(gpu CUDA VULKAN METAL)
  set(GGML_${gpu} OFF CACHE BOOL "" FORCE)
endforeach()
if(LLAMA_NAPI_BACKEND STREQUAL "cuda")
  set(GGML_CUDA ON CACHE BOOL "" FORCE)
  # Which GPUs the module has code for (CMAKE_CUDA_ARCHITECTURES, or LLAMA_NAPI_CUDA_ARCHITECTURES
  # from the environment). The prebuilt module (a build with every CPU variant): real code for
  # sm_80 (A100; also runs on sm_86 RTX 30xx/A10/A40), sm_89 (RTX 40xx, L4, L40), sm_90 (H100,
  # H200) and sm_120 (RTX 50xx), and PTX for sm_75 (Turing: T4, RTX 20xx; compiled by the driver
  # at first use) - CUDA 13 supports nothing older. Each real architecture adds about 17 MB of
  # device code to some 20 MB of host code (measured with 90-real: README, CUDA). A build for
  # one's own machine: the GPUs it has ("native", CMake >= 3.24), else the same list.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(LLAMA_NAPI_CUDA_RELEASE_ARCHITECTURES "75-virtual;80-real;89-real;90-real;120a-real")
    if(DEFINED ENV{LLAMA_NAPI_CUDA_ARCHITECTURES})
      set(archs "$ENV{LLAMA_NAPI_CUDA_ARCHITECTURES}")
    elseif(LLAMA_NAPI_CPU_VARIANTS OR CMAKE_VERSION VERSION_LESS 3.24)
      set(archs "${LLAMA_NAPI_CUDA_RELEASE_ARCHITECTURES}")
    else()
      execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE no_gpu OUTPUT_QUIET ERROR_QUIET)
      if(no_gpu EQUAL 0)
        set(archs "native")
      else()
        set(archs "${LLAMA_NAPI_CUDA_RELEASE_ARCHITECTURES}")
      endif()
    endif()
    set(CMAKE_CUDA_ARCHITECTURES "${archs}" CACHE STRING "")
  endif()
  # nvcc from the toolkit itself (CUDA_PATH, /usr/local/cuda) before any wrapper on PATH, so that
  # CMake finds the toolkit's headers and libraries next to it. CUDACXX or
  # -DCMAKE_CUDA_COMPILER=... choose another.
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(LLAMA_NAPI_NVCC nvcc PATHS "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin /opt/cuda/bin NO_DEFAULT_PATH)
    if(LLAMA_NAPI_NVCC)
      set(CMAKE_CUDA_COMPILER "${LLAMA_NAPI_NVCC}" CACHE FILEPATH "")
    endif()
  endif()
  # No NCCL: it only speeds up tensor-parallel multi-GPU runs, and is rarely installed.
  set(GGML_CUDA_NCCL OFF CACHE BOOL "")
  # Without the driver's libcuda (a toolkit assembled from NVIDIA's pip wheels has no stub of it)
  # ggml-cuda cannot link CUDA::cuda_driver, which only its virtual-memory pool needs: the legacy
  # pool then (GGML_CUDA_NO_VMM).
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND AND NOT TARGET CUDA::cuda_driver AND NOT DEFINED GGML_CUDA_NO_VMM)
    message(STATUS "llama-napi: no libcuda (CUDA::cuda_driver) to link: GGML_CUDA_NO_VMM=ON")
    set(GGML_CUDA_NO_VMM ON CACHE BOOL "")
  endif()
elseif(LLAMA_NAPI_BACKEND STREQUAL "vulkan")
  set(GGML_VULKAN ON CACHE BOOL "" FORCE)
elseif(LLAMA_NAPI_BACKEND STREQUAL "metal")
  # macOS: Metal, with the shader library embedded in the backend (no .metallib beside it).
  # Written for macOS but not built or tested on this project's Linux machines.
  if(NOT APPLE)
    message(FATAL_ERROR "LLAMA_NAPI_BACKEND=metal needs macOS")
  endif()
  set(GGML_METAL ON CACHE BOOL "" FORCE)
  set(GGML_METAL_EMBED_LIBRARY ON CACHE BOOL "" FORCE)
elseif(NOT LLAMA_NAPI_BACKEND STREQUAL "cpu")
  message(FATAL_ERROR "LLAMA_NAPI_BACKEND must be cpu, cuda, vulkan or metal, not '${LLAMA_NAPI_BACKEND}'")
endif()

# The RPC backend: layers on other machines (loadModel({rpcServers}), llama-napi rpc-server).
set(GGML_RPC ON CACHE BOOL "" FORCE)

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
