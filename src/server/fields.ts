/**
 * Request fields read through the option tables (src/options/): each entry's `field` names the
 * request field that sets it (top_p, logit_bias, tools, reasoning_format, ...). `null` counts as
 * absent; a bad value is a 400 naming the field, and the place inside it for structured ones
 * ("tools[0].function.name").
 */
import { OptionValueError, entriesOf, readOptions, setPath, type OptionTable, type ParsedOptions } from "../options/spec.js";
import { badField } from "./http.js";

type Body = Record<string, unknown>;

/**
 * The options of a table that request fields set, checked by the entry's check, or by the
 * field's own where the server's spelling differs (OpenAI's logit_bias, tools, ...).
 */
export function fromFields<T extends OptionTable>(table: T, body: Body): ParsedOptions<T> {
  const out: Record<string, unknown> = {};
  for (const [path, spec] of entriesOf(table)) {
    if (!spec.field) continue;
    const { name, parse } = spec.field;
    const v = body[name] ?? undefined;
    if (v === undefined) continue;
    try {
      const value = (parse ?? spec.parse)(v);
      if (value !== undefined) setPath(out, path, value);
    } catch (err) {
      if (err instanceof OptionValueError) throw badField(`${name}${err.at}`, `${name}${err.at} must be ${err.expected}`);
      throw err;
    }
  }
  if (out.jsonSchema === "") delete out.jsonSchema; // response_format { type: "text" }
  try {
    return readOptions(table, out, "request");
  } catch (err) {
    throw badField("request", (err as Error).message);
  }
}

/** Whether the body sets any field of the table. */
export function setsAnyField(table: OptionTable, body: Body): boolean {
  for (const [, spec] of entriesOf(table)) if (spec.field && (body[spec.field.name] ?? undefined) !== undefined) return true;
  return false;
}
