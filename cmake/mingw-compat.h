/*
 * Declarations that older mingw-w64 headers lack, forced into every C and C++ file of a MinGW
 * build (CMakeLists.txt). Debian 12's mingw-w64 10.0 has SetThreadInformation and
 * ThreadPowerThrottling but not THREAD_POWER_THROTTLING_STATE (added in mingw-w64 11), which
 * ggml-cpu.c uses to keep Windows 11 from parking the threads of its thread pool. The values
 * are the Windows SDK's (processthreadsapi.h).
 */
#ifndef LLAMA_NAPI_MINGW_COMPAT_H
#define LLAMA_NAPI_MINGW_COMPAT_H
#include <_mingw.h>
#if defined(__MINGW64_VERSION_MAJOR) && __MINGW64_VERSION_MAJOR < 11 && !defined(THREAD_POWER_THROTTLING_CURRENT_VERSION)
#define THREAD_POWER_THROTTLING_CURRENT_VERSION 1
#define THREAD_POWER_THROTTLING_EXECUTION_SPEED 0x1
#define THREAD_POWER_THROTTLING_VALID_FLAGS (THREAD_POWER_THROTTLING_EXECUTION_SPEED)
typedef struct _THREAD_POWER_THROTTLING_STATE {
  unsigned long Version; /* ULONG: 32 bits on Windows */
  unsigned long ControlMask;
  unsigned long StateMask;
} THREAD_POWER_THROTTLING_STATE, *PTHREAD_POWER_THROTTLING_STATE;
#endif
#endif
