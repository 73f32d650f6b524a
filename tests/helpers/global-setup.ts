import { ensureFixtures } from "./fixtures.js";

export default async function setup(): Promise<void> {
  await ensureFixtures();
}
