/**
 * Why a text is not valid JSON, without quoting it: JSON.parse's own message repeats the start of the
 * input ("… "root:x:0:0"... is not valid JSON"), and an error message must never carry a file's contents
 * (a run could point a worker at a file its author may not read).
 */
export function jsonProblem(err: unknown): string {
  const message = typeof (err as Error)?.message === 'string' ? (err as Error).message : String(err);
  if (/Unexpected end of JSON input/i.test(message)) return 'it ends too early';
  const position = /at position (\d+)/.exec(message)?.[1];
  return position === undefined ? 'unexpected content' : `unexpected content at position ${position}`;
}

/** Why a JSON file could not be used, without quoting it: "cannot be read (ENOENT)" or "is not valid JSON (…)". */
export function jsonFileProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code ? `cannot be read (${code})` : `is not valid JSON (${jsonProblem(err)})`;
}
