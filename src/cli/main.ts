#!/usr/bin/env node
/** The llama-napi command line. */
import { reportError, UsageError } from "./args.js";
import { generateUsage, runGenerate } from "./generate.js";
import { makeGpt2Usage, runMakeGpt2 } from "./make-gpt2.js";
import { inspectUsage, runInspect } from "./inspect.js";
import { quantizeUsage, runQuantize } from "./quantize.js";
import { explainUsage, runExplain } from "./explain.js";
import { serveUsage, runServe } from "./serve.js";
import { rpcServerUsage, runRpcServer } from "./rpc-server.js";
import { buildUsage, runBuild } from "./build.js";
import { infoUsage, runInfo } from "./info.js";
import { chatUsage, runChat } from "./chat.js";
import { pullUsage, runPull } from "./pull.js";
import { createModelUsage, runCreateModel, runTrain, trainUsage } from "./train.js";

interface Command {
  usage: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  chat: { usage: chatUsage, run: runChat },
  pull: { usage: pullUsage, run: runPull },
  generate: { usage: generateUsage, run: runGenerate },
  "make-gpt2": { usage: makeGpt2Usage, run: runMakeGpt2 },
  inspect: { usage: inspectUsage, run: runInspect },
  quantize: { usage: quantizeUsage, run: runQuantize },
  explain: { usage: explainUsage, run: runExplain },
  serve: { usage: serveUsage, run: runServe },
  "rpc-server": { usage: rpcServerUsage, run: runRpcServer },
  info: { usage: infoUsage, run: runInfo },
  build: { usage: buildUsage, run: runBuild },
  train: { usage: trainUsage, run: runTrain },
  "create-model": { usage: createModelUsage, run: runCreateModel },
};

function help(): string {
  return `llama-napi: run local LLMs (GGUF) through llama.cpp

Commands:
${Object.values(COMMANDS)
  .map((c) => `  ${c.usage.split("\n")[0]}`)
  .join("\n")}

Run \`llama-napi help COMMAND\` for a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    const topic = rest[0] !== undefined ? COMMANDS[rest[0]] : undefined;
    process.stdout.write(`${topic ? topic.usage : help()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) throw new UsageError(`unknown command "${name}"`);
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = reportError(err);
  },
);
