import { ensureDist } from "./dist.js";
import { ensureFixtures } from "./fixtures.js";

export default async function setup(): Promise<void> {
  await Promise.all([ensureFixtures(), ensureDist()]);
}
