/**
 * Command-line flags made from the option tables (src/options/): each entry with a `flag` is a
 * flag of the commands that take that table, with its help line, and its text is checked by the
 * same check as the API's.
 */
import type { ParseArgsConfig } from "node:util";

import { LlamaError } from "../errors.js";
import { entriesOf, readOptions, setPath, type AnySpec, type OptionTable, type ParsedOptions } from "../options/spec.js";
import { UsageError } from "./args.js";

type ParseOptions = NonNullable<ParseArgsConfig["options"]>;

/** The flags of one option table, for one command. */
export interface FlagGroup<T extends OptionTable> {
  /** For node:util's parseArgs. */
  readonly parseOptions: ParseOptions;
  /** Help lines, one per flag. */
  readonly help: string[];
  /** Maps "-ngl" and the like to their long names (parseArgs takes one-letter short flags only). */
  readonly aliases: ReadonlyMap<string, string>;
  /** The options the flags in `values` set, checked by the table (defaults not filled in). */
  read(values: Record<string, unknown>): ParsedOptions<T>;
}

function defaultText(spec: AnySpec): string {
  if (spec.defaultText) return ` (default: ${spec.defaultText})`;
  if (spec.default === undefined || typeof spec.default === "function") return "";
  const d = spec.default;
  if (Array.isArray(d)) return "";
  return ` (default ${String(d)})`;
}

/**
 * The flags of `table`'s entries (all, or those in `only`), with `help` replacing an entry's
 * help where a command means something more specific (and its default too, when it states one).
 */
export function flagGroup<T extends OptionTable>(table: T, settings: { only?: ReadonlyArray<keyof T & string>; help?: Partial<Record<keyof T & string, string>> } = {}): FlagGroup<T> {
  const parseOptions: ParseOptions = {};
  const help: string[] = [];
  const aliases = new Map<string, string>();
  const flagged: Array<[path: string[], spec: AnySpec]> = [];
  for (const [path, spec] of entriesOf(table)) {
    if (!spec.flag) continue;
    if (settings.only && !settings.only.includes(path[0]!)) continue;
    const { name, arg, multiple } = spec.flag;
    parseOptions[name] = arg ? { type: "string", ...(multiple ? { multiple: true } : {}) } : { type: "boolean" };
    for (const alias of spec.flag.aliases ?? []) aliases.set(alias, `--${name}`);
    const short = spec.flag.aliases?.length ? `${spec.flag.aliases.join(", ")}, ` : "    ";
    const names = `${short}--${name}${arg ? ` ${arg}` : ""}`;
    const override = path.length === 1 ? settings.help?.[path[0] as keyof T & string] : undefined;
    // An override that states its own default replaces the table's.
    const text = override ?? spec.flag.help;
    help.push(`  ${names.padEnd(28)} ${text}${override?.includes("(default") ? "" : defaultText(spec)}`);
    flagged.push([path, spec]);
  }
  return {
    parseOptions,
    help,
    aliases,
    read(values) {
      const out: Record<string, unknown> = {};
      for (const [path, spec] of flagged) {
        const raw = values[spec.flag!.name];
        if (raw === undefined) continue;
        const value = Array.isArray(raw) ? raw : typeof raw === "string" && spec.fromText ? spec.fromText(raw) : raw;
        setPath(out, path, value);
      }
      try {
        return readOptions(table, out, "options");
      } catch (err) {
        if (err instanceof LlamaError && err.code === "ERR_INVALID_ARGUMENT") {
          const flagPath = flagged.find(([path]) => err.message.startsWith(`options.${path.join(".")} `));
          if (flagPath) throw new UsageError(`--${flagPath[1].flag!.name} ${err.message.slice(`options.${flagPath[0].join(".")} `.length)}`);
        }
        throw err;
      }
    },
  };
}

/** Rewrites multi-letter short flags ("-ngl 99") to their long names for parseArgs. */
export function expandAliases(argv: readonly string[], groups: ReadonlyArray<Pick<FlagGroup<OptionTable>, "aliases">>, extra: Record<string, string> = {}): string[] {
  return argv.map((a) => {
    if (extra[a]) return extra[a];
    for (const g of groups) {
      const long = g.aliases.get(a);
      if (long) return long;
    }
    return a;
  });
}
