/**
 * The README's environment table restates util/env.ts (the one place each variable is defined): every
 * variable the program checks is documented there with the same text, and the table names no other.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENVIRONMENT } from '../../util/env';

test('the README environment table lists exactly the checked variables, with their docs', () => {
  const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Environment'), readme.indexOf('## Architecture'));
  const rows = [...section.matchAll(/^\| `([A-Z0-9_]+)` \| (.*) \|$/gm)].map((m) => [m[1], m[2]]);
  expect(rows).toEqual(Object.entries(ENVIRONMENT).map(([name, { doc }]) => [name, doc]));
});
