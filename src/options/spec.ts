/**
 * The machinery behind the option tables (src/options/*.ts). Each table entry says, once, what an
 * option is: its check (type and range), its default, the command-line flag that sets it and the
 * server request field that sets it. The public TypeScript types, the validation, the defaults
 * the native layer receives, the CLI flags and their help, and the server's request fields all
 * come from the tables.
 */
import { LlamaError, describe } from "../errors.js";
import { rejectUnknownKeys } from "./suggest.js";

/** What a default may depend on: the model the options are for. */
export interface OptionScope {
  /** The model's training context (0 when unknown). */
  trainingContext?: number;
}

/** A default that depends on the model or on the options read before it in the table. */
export type DefaultFn<Out> = (scope: OptionScope, values: Readonly<Record<string, unknown>>) => Out;

/** How a command-line flag sets an option. */
export interface FlagSpec {
  /** The long name, without "--" (e.g. "top-k"). */
  readonly name: string;
  /** Other spellings, with their dashes (e.g. "-c", "-np"). */
  readonly aliases?: readonly string[];
  /** The value's placeholder in the help (e.g. "N"); absent for a switch. */
  readonly arg?: string;
  /** One line of help. */
  readonly help: string;
  /** The flag may be given several times (its values form an array). */
  readonly multiple?: boolean;
}

/** How a server request field sets an option. */
export interface FieldSpec<Out> {
  /** The request field (e.g. "top_p"). */
  readonly name: string;
  /** Reads the field's value in the server's terms, when they differ from the library's (undefined: as if absent). */
  readonly parse?: (value: unknown) => Out | undefined;
}

/**
 * One option: its check and normalisation, its default, and the flag and request field that set
 * it. `In` is what a caller may pass, `Out` what the check makes of it.
 */
export interface OptionSpec<In, Out = In> {
  /** What a valid value is, for error messages ("a number from 0 to 1"). */
  readonly expected: string;
  /** Checks and normalises a value that is not undefined; throws {@link OptionValueError}. */
  readonly parse: (value: unknown) => Out;
  /** The value used when the option is absent (none: the option stays absent). */
  readonly default?: Out | DefaultFn<Out>;
  /** The default in words, for help texts where it is computed. */
  readonly defaultText?: string;
  /** A nested table, for object-valued options. */
  readonly fields?: OptionTable;
  readonly flag?: FlagSpec;
  readonly field?: FieldSpec<Out>;
  /** Turns a flag's text into a value (default: a number when the check wants one). */
  readonly fromText?: (text: string) => unknown;
  /** Type-level marker of the accepted input; never set at run time. */
  readonly __in?: In;
}

/** Any option spec (every type parameter of OptionSpec is covariant). */
export type AnySpec = OptionSpec<unknown, unknown>;

/** A table of options: name → spec. */
export type OptionTable = { readonly [name: string]: AnySpec };

/** What callers may pass for a table (every option optional, with the entry's doc comment). */
export type OptionsOf<T extends OptionTable> = {
  -readonly [K in keyof T]?: T[K] extends OptionSpec<infer In, unknown> ? In : never;
};

/** What a table's check produces. */
export type ParsedOptions<T extends OptionTable> = {
  -readonly [K in keyof T]?: T[K] extends OptionSpec<unknown, infer Out> ? Out : never;
};

/**
 * Thrown by a spec's `parse` when a value is not what the option takes; `at` is where inside the
 * value, for structured ones (".weather.handler", "[0].function.name").
 */
export class OptionValueError extends Error {
  constructor(
    readonly expected: string,
    readonly at = "",
  ) {
    super(expected);
  }
}

function fail(expected: string): never {
  throw new OptionValueError(expected);
}

interface Common<Out> {
  default?: Out | DefaultFn<Out>;
  defaultText?: string;
  flag?: FlagSpec;
  field?: FieldSpec<Out>;
  fromText?: (text: string) => unknown;
}

function range(min: number | undefined, max: number | undefined): string {
  if (min !== undefined && max !== undefined) return ` from ${min} to ${max}`;
  if (min !== undefined) return min === 0 ? " ≥ 0" : ` ≥ ${min}`;
  if (max !== undefined) return ` ≤ ${max}`;
  return "";
}

/** A finite number, optionally within [min, max] (or above `above`, exclusive). */
export function number(o: Common<number> & { min?: number; max?: number; above?: number } = {}): OptionSpec<number> {
  const expected = o.above !== undefined ? `a number > ${o.above}` : `a number${range(o.min, o.max)}`;
  return {
    ...o,
    expected,
    parse(v) {
      if (typeof v !== "number" || !Number.isFinite(v)) fail(expected);
      if ((o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max)) fail(expected);
      if (o.above !== undefined && !(v > o.above)) fail(expected);
      return v;
    },
    fromText: Number,
  };
}

/** An integer within [min, max]. */
export function integer(o: Common<number> & { min?: number; max?: number } = {}): OptionSpec<number> {
  const expected = `an integer${range(o.min, o.max)}`;
  return {
    ...o,
    expected,
    parse(v) {
      if (typeof v !== "number" || !Number.isInteger(v)) fail(expected);
      if ((o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max)) fail(expected);
      return v;
    },
    fromText: Number,
  };
}

/** true or false. */
export function boolean(o: Common<boolean> = {}): OptionSpec<boolean> {
  return {
    ...o,
    expected: "a boolean",
    parse: (v) => (typeof v === "boolean" ? v : fail("a boolean")),
    fromText: (t) => (t === "true" || t === "on" || t === "1" ? true : t === "false" || t === "off" || t === "0" ? false : t),
  };
}

/** A string (non-empty unless `allowEmpty`). */
export function string(o: Common<string> & { allowEmpty?: boolean } = {}): OptionSpec<string> {
  const expected = o.allowEmpty ? "a string" : "a non-empty string";
  return { ...o, expected, parse: (v) => (typeof v === "string" && (o.allowEmpty || v !== "") ? v : fail(expected)) };
}

/** One of a list of strings. */
export function oneOf<const V extends string>(values: readonly V[], o: Common<V> = {}): OptionSpec<V> {
  const expected = `one of ${values.map((v) => JSON.stringify(v)).join(", ")}`;
  return { ...o, expected, parse: (v) => (values.includes(v as V) ? (v as V) : fail(expected)) };
}

/** An array of strings, at most `maxItems` of them. */
export function strings(o: Common<string[]> & { maxItems: number; nonEmpty?: boolean }): OptionSpec<readonly string[], string[]> {
  const expected = `an array of at most ${o.maxItems} ${o.nonEmpty ? "non-empty " : ""}strings`;
  return {
    ...o,
    expected,
    parse(v) {
      if (!Array.isArray(v) || v.length > o.maxItems) fail(expected);
      if (v.some((s) => typeof s !== "string" || (o.nonEmpty && s === ""))) fail(expected);
      return [...(v as string[])];
    },
  };
}

/** A nested options object, checked against its own table (with its defaults). */
export function object<T extends OptionTable>(fields: T, o: Common<ParsedOptions<T>> = {}): OptionSpec<OptionsOf<T>, ParsedOptions<T>> {
  return {
    ...o,
    expected: "an object",
    fields,
    parse: (v) => {
      if (v === null || typeof v !== "object" || Array.isArray(v)) fail("an object");
      return v as ParsedOptions<T>; // the fields are checked by readOptions, which knows the path
    },
  };
}

/** Any other check: `parse` returns the normalised value or calls {@link fail}. */
export function custom<In, Out = In>(o: Common<Out> & { expected: string; parse: (v: unknown) => Out }): OptionSpec<In, Out> {
  return o;
}

export { fail as invalidValue };

/** A value inside a structured option is not repeated in the message. */
const NOT_SHOWN = Symbol("not shown");

function badValue(where: string, key: string, expected: string, got: unknown): never {
  throw new LlamaError("ERR_INVALID_ARGUMENT", `${where}.${key} must be ${expected}${got === NOT_SHOWN ? "" : `; got ${describe(got)}`}`);
}

/**
 * Checks `input` against `table`: an unknown name is refused (naming the nearest known one), a
 * bad value is refused naming the option and what it takes. With `defaults`, every absent
 * option that has a default gets it (the native layer then sets none of its own).
 */
export function readOptions<T extends OptionTable>(
  table: T,
  input: unknown,
  where: string,
  settings: { defaults?: boolean; scope?: OptionScope } = {},
): ParsedOptions<T> {
  if (input === undefined) input = {};
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    throw new LlamaError("ERR_INVALID_ARGUMENT", `${where} must be an object; got ${describe(input)}`);
  }
  const given = input as Record<string, unknown>;
  rejectUnknownKeys(where, given, Object.keys(table));
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(table)) {
    const value = given[key];
    if (value !== undefined) {
      out[key] = parseValue(spec, value, where, key, settings);
    } else if (settings.defaults && spec.default !== undefined) {
      out[key] = typeof spec.default === "function" ? (spec.default as DefaultFn<unknown>)(settings.scope ?? {}, out) : spec.default;
    }
  }
  return out as ParsedOptions<T>;
}

function parseValue(spec: AnySpec, value: unknown, where: string, key: string, settings: { defaults?: boolean; scope?: OptionScope }): unknown {
  let parsed: unknown;
  try {
    parsed = spec.parse(value);
  } catch (err) {
    if (err instanceof OptionValueError) badValue(where, `${key}${err.at}`, err.expected, err.at === "" ? value : NOT_SHOWN);
    throw err;
  }
  return spec.fields ? readOptions(spec.fields, parsed, `${where}.${key}`, settings) : parsed;
}

/** Every entry of a table and its nested tables, with its path (["xtc", "threshold"]). */
export function* entriesOf(table: OptionTable, prefix: readonly string[] = []): Generator<[path: string[], spec: AnySpec]> {
  for (const [key, spec] of Object.entries(table)) {
    const path = [...prefix, key];
    yield [path, spec];
    if (spec.fields) yield* entriesOf(spec.fields, path);
  }
}

/** Sets `value` at `path` in `target`, making the nested objects on the way. */
export function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    node[key] ??= {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}
