#!/usr/bin/env node
// Vendors llama.cpp into vendor/llama.cpp at the commit pinned in vendor/llama.cpp.pin.json.
//
// The source comes from the git bundle that the npm package node-llama-cpp ships
// (llama/gitRelease.bundle). The package tarball is fetched through npm (so the user's registry,
// proxy and cache settings apply), its sha512 is checked against the pin, the bundle is taken
// out of it, cloned and checked out at the pinned commit. Running it again is a no-op.
//
// Offline use: LLAMA_NAPI_VENDOR_TARBALL=/path/to/node-llama-cpp-3.22.1.tgz skips the fetch
// (the checksum is still checked).
import { createHash } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const pinPath = path.join(root, "vendor", "llama.cpp.pin.json");
const dest = path.join(root, "vendor", "llama.cpp");
const cacheDir = path.join(root, "vendor", ".cache");
const stampName = ".llama-napi-vendor.json";

class VendorError extends Error {}

function fail(message) {
  throw new VendorError(message);
}

function readPin() {
  const pin = JSON.parse(fs.readFileSync(pinPath, "utf8"));
  for (const key of ["package", "version", "integrity", "bundlePath", "commit"]) {
    if (typeof pin[key] !== "string" || pin[key] === "") fail(`${pinPath}: "${key}" is missing`);
  }
  if (!/^[0-9a-f]{40}$/.test(pin.commit)) fail(`${pinPath}: "commit" must be a full 40-digit sha`);
  if (!pin.integrity.startsWith("sha512-")) fail(`${pinPath}: "integrity" must be an sha512 SRI string`);
  return pin;
}

function git(args, opts = {}) {
  return execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts }).trim();
}

function requireGit() {
  const r = spawnSync("git", ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    fail(
      "git was not found on PATH. llama.cpp is extracted from a git bundle, so git is needed " +
        "to build llama-napi from source. Install git (for example `apt-get install git`, " +
        "`brew install git` or https://git-scm.com) and run `npm install` again.",
    );
  }
}

/** True when vendor/llama.cpp already holds the pinned commit. */
function isUpToDate(pin) {
  const stampPath = path.join(dest, stampName);
  if (!fs.existsSync(stampPath)) return false;
  let stamp;
  try {
    stamp = JSON.parse(fs.readFileSync(stampPath, "utf8"));
  } catch {
    return false;
  }
  if (stamp.commit !== pin.commit || stamp.integrity !== pin.integrity) return false;
  // A git checkout must still be at the commit; a pruned tree (from a packed tarball) has no .git.
  if (fs.existsSync(path.join(dest, ".git"))) {
    try {
      return git(["-C", dest, "rev-parse", "HEAD"]) === pin.commit;
    } catch {
      return false;
    }
  }
  return fs.existsSync(path.join(dest, "CMakeLists.txt"));
}

function sriOf(file) {
  const hash = createHash("sha512");
  hash.update(fs.readFileSync(file));
  return `sha512-${hash.digest("base64")}`;
}

function fetchTarball(pin) {
  const override = process.env.LLAMA_NAPI_VENDOR_TARBALL;
  if (override) {
    if (!fs.existsSync(override)) fail(`LLAMA_NAPI_VENDOR_TARBALL points to ${override}, which does not exist`);
    return override;
  }
  fs.mkdirSync(cacheDir, { recursive: true });
  const file = path.join(cacheDir, `${pin.package}-${pin.version}.tgz`);
  if (fs.existsSync(file) && sriOf(file) === pin.integrity) return file;
  fs.rmSync(file, { force: true });
  const spec = `${pin.package}@${pin.version}`;
  console.log(`[vendor] fetching ${spec} from the npm registry`);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(npm, ["pack", spec, "--pack-destination", cacheDir, "--silent"], {
    encoding: "utf8",
    shell: process.platform === "win32",
  });
  if (r.error || r.status !== 0) {
    fail(
      `could not fetch ${spec} with \`npm pack\`: ${(r.stderr || r.error?.message || "").trim()}\n` +
        "Check your network or npm registry settings, or download the tarball yourself and set " +
        "LLAMA_NAPI_VENDOR_TARBALL to its path.",
    );
  }
  if (!fs.existsSync(file)) fail(`npm pack did not produce ${file}`);
  return file;
}

/** Extracts one regular file from a .tgz into memory (ustar and pax long names). */
function extractFromTgz(tgz, wanted) {
  const tar = zlib.gunzipSync(fs.readFileSync(tgz));
  let offset = 0;
  let paxName = null;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const str = (start, len) => header.subarray(start, start + len).toString("utf8").replace(/\0.*$/s, "");
    const size = parseInt(str(124, 12).trim() || "0", 8);
    const type = String.fromCharCode(header[156] || 48);
    const prefix = str(345, 155);
    let name = paxName ?? (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100));
    const body = tar.subarray(offset + 512, offset + 512 + size);
    offset += 512 + Math.ceil(size / 512) * 512;
    if (type === "x") {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString("utf8"));
      paxName = m ? m[1] : null;
      continue;
    }
    paxName = null;
    if ((type === "0" || type === "\0") && name === wanted) return Buffer.from(body);
  }
  fail(`${wanted} was not found in ${tgz}`);
}

function vendor() {
  const pin = readPin();
  if (isUpToDate(pin)) {
    console.log(`[vendor] vendor/llama.cpp is at ${pin.commit.slice(0, 10)}; nothing to do`);
    return;
  }
  requireGit();
  const tgz = fetchTarball(pin);
  const actual = sriOf(tgz);
  if (actual !== pin.integrity) {
    fail(
      `checksum mismatch for ${path.basename(tgz)}:\n  expected ${pin.integrity}\n  got      ${actual}\n` +
        "The tarball is not the pinned release. Delete vendor/.cache and retry; if it still " +
        "differs, your registry serves a different file and it must not be used.",
    );
  }
  const work = fs.mkdtempSync(path.join(path.dirname(dest), ".llama.cpp-"));
  try {
    const bundle = path.join(work, "llama.bundle");
    fs.writeFileSync(bundle, extractFromTgz(tgz, pin.bundlePath));
    const heads = git(["bundle", "list-heads", bundle]);
    if (!heads.includes(pin.commit)) fail(`the bundle in ${pin.package}@${pin.version} does not contain ${pin.commit}`);
    const tree = path.join(work, "llama.cpp");
    console.log(`[vendor] checking out llama.cpp ${pin.commit.slice(0, 10)}`);
    git(["-c", "advice.detachedHead=false", "clone", "--quiet", "--no-checkout", bundle, tree]);
    git(["-C", tree, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", pin.commit]);
    const head = git(["-C", tree, "rev-parse", "HEAD"]);
    if (head !== pin.commit) fail(`checked out ${head}, expected ${pin.commit}`);
    const stamp = { package: pin.package, version: pin.version, integrity: pin.integrity, commit: pin.commit };
    fs.writeFileSync(path.join(tree, stampName), JSON.stringify(stamp, null, 2) + "\n");
    fs.rmSync(dest, { recursive: true, force: true });
    fs.renameSync(tree, dest);
    console.log(`[vendor] vendor/llama.cpp ready (${pin.package}@${pin.version}, ${pin.commit})`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

try {
  vendor();
} catch (err) {
  if (err instanceof VendorError) {
    console.error(`[vendor] error: ${err.message}`);
    process.exit(1);
  }
  throw err;
}
