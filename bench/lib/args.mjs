/** Command-line options of bench/run.mjs. */

export const USAGE = `usage: npm run bench -- [options]

  --quick          fewer repetitions and shorter runs (a smoke test of the harness)
  --suite a,b      suites to run (default: all; see bench/suites/)
  --threads N      CPU threads for every implementation (default 2)
  --reps N         repetitions; medians are quoted (default 5, --quick 3)
  --list           list the suites and exit
  --help           this text`;

/** A mistake in the command line: reported without a stack trace. */
export class UsageError extends Error {}

export function parseArgs(argv) {
  const options = { quick: false, suites: null, threads: 2, reps: null, list: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [name, inline] = arg.startsWith("--") && arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${name} needs a value`);
      return v;
    };
    const positiveInt = () => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer; got ${v}`);
      return n;
    };
    switch (name) {
      case "--quick": options.quick = true; break;
      case "--suite":
      case "--suites": options.suites = value().split(",").map((s) => s.trim()).filter(Boolean); break;
      case "--threads": options.threads = positiveInt(); break;
      case "--reps": options.reps = positiveInt(); break;
      case "--list": options.list = true; break;
      case "--help":
      case "-h": options.help = true; break;
      default: throw new UsageError(`unknown option ${arg}\n\n${USAGE}`);
    }
  }
  options.reps ??= options.quick ? 3 : 5;
  return options;
}
