import { parseArgs } from "node:util";

import { AbortError } from "../errors.js";
import { modelFilePath, resolveModelFile } from "../model-files.js";
import { DOWNLOAD_OPTIONS } from "../options/download.js";
import { UsageError } from "./args.js";
import { expandAliases, flagGroup } from "./option-flags.js";
import { formatBytes, progressBar } from "./progress.js";

const downloadFlags = flagGroup(DOWNLOAD_OPTIONS);

export const pullUsage = `llama-napi pull URL|hf:OWNER/REPO/FILE.gguf [-o DIR]

Downloads a model file and prints its path. hf:OWNER/REPO/FILE.gguf is FILE.gguf in the Hugging Face
repository OWNER/REPO (branch main; the hub is LLAMA_NAPI_HF_ENDPOINT or HF_ENDPOINT when set, and
HF_TOKEN is sent to it for gated repositories). Files go to the cache folder (LLAMA_NAPI_MODELS, else
~/.cache/llama-napi/models), where \`llama-napi chat -m\` and loadModel() find them by the same
reference; a file there already is not downloaded again. An interrupted download resumes; the size
and, when the server gives it (the hub does), the sha256 are checked before the file appears.
A progress bar is drawn on stderr when it is a terminal.

${downloadFlags.help.join("\n")}`;

export async function runPull(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: expandAliases(argv, [downloadFlags]),
    options: { ...downloadFlags.parseOptions },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError("pull needs one model: llama-napi pull URL|hf:OWNER/REPO/FILE.gguf");
  const ref = positionals[0]!;
  const options = downloadFlags.read(values);
  const target = modelFilePath(ref, options.directory);
  const bar = progressBar(`${target.split(/[\\/]/).pop()}`);
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  let downloaded = false;
  let detail = "";
  try {
    const file = await resolveModelFile(ref, {
      ...options,
      signal: controller.signal,
      onProgress: ({ downloadedBytes, totalBytes }) => {
        downloaded = true;
        const of = totalBytes === undefined ? "" : ` / ${formatBytes(totalBytes)}`;
        detail = `${formatBytes(downloadedBytes)}${of}`;
        bar.update(totalBytes ? downloadedBytes / totalBytes : undefined, detail);
      },
    });
    if (downloaded) bar.done(`${detail} done`);
    else if (process.stderr.isTTY) process.stderr.write(`llama-napi: ${file} is there already (--force downloads it again)\n`);
    process.stdout.write(`${file}\n`);
    return 0;
  } catch (err) {
    if (err instanceof AbortError) {
      process.stderr.write(`\nllama-napi: download stopped; run the same command again to resume it\n`);
      return 130;
    }
    throw err;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
