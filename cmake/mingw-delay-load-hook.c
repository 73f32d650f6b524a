/*
 * MinGW builds of the addon (the win32-x64 prebuild) import Node-API from "node.exe" through a
 * delay-load import library (dlltool --output-delaylib, see CMakeLists.txt). When the first
 * Node-API call resolves that import, this hook hands mingw-w64's delay-load helper the process's
 * own executable instead of a file called node.exe, so the addon also works in a renamed
 * node.exe, in Electron and in other programs that embed Node and export Node-API themselves
 * (node-gyp's win_delay_load_hook.cc does the same for MSVC builds; it only compiles with MSVC).
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <delayimp.h>
#include <string.h>

static FARPROC WINAPI llama_napi_load_exe_hook(unsigned event, PDelayLoadInfo info) {
  if (event != dliNotePreLoadLibrary || _stricmp(info->szDll, "node.exe") != 0) return NULL;
  /* Node built as a DLL (libnode: node.dll) exports Node-API from there; else the executable does. */
  HMODULE node = GetModuleHandleA("node.dll");
  return (FARPROC)(node != NULL ? node : GetModuleHandleA(NULL));
}

/* Defining it here keeps mingw-w64's default (a null hook, libmingwex's delay-n.o) out of the link. */
PfnDliHook __pfnDliNotifyHook2 = llama_napi_load_exe_hook;
