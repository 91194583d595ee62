/**
 * Debian's chromium (`apt-get install chromium`; `.ci/run` installs it), driven by playwright-core: the
 * browser tests and the experiment figure use it. Playwright's own browser downloads come from a host
 * that may be unreachable, so none is fetched.
 */
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';

export function chromiumPath(): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter))
    for (const name of ['chromium', 'chromium-browser']) if (existsSync(join(dir, name))) return join(dir, name);
  throw new Error('no chromium on PATH: install it with `apt-get install chromium` (.ci/run does)');
}

/** Headless chromium; --no-sandbox because CI runs as root, where chromium's sandbox refuses to start. */
export const launchChromium = (): Promise<Browser> =>
  chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
