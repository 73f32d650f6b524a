// `node --import ./tests/helpers/register-ts-cached.mjs file.ts`: see ts-cached-loader.mjs.
import { register } from "node:module";

register("./ts-cached-loader.mjs", import.meta.url);
