// `node --import ./tests/fuzz/register-ts.mjs file.ts`: see ts-loader.mjs.
import { register } from "node:module";

register("./ts-loader.mjs", import.meta.url);
