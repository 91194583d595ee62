/**
 * What a run id may be. It names the run's workflow and its folder in the artifact store, so it is
 * checked before anything is recorded: letters, digits, `.`, `_`, `-`, starting with a letter or digit,
 * at most 200 characters (no `/`, no `..`: an id can never point outside the store).
 */
export const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** The problem with `id` as a run id, or undefined when it is fine. */
export function runIdProblem(id: string): string | undefined {
  if (id.length === 0) return 'must not be empty';
  if (id.length > 200) return `has ${id.length} characters; at most 200`;
  if (!RUN_ID.test(id)) return 'may hold only letters, digits, ".", "_" and "-", and must start with a letter or digit';
  return undefined;
}

/** A group name follows the run id rule: it is shown in URLs and file names next to run ids. */
export const groupProblem = (group: string): string | undefined => runIdProblem(group);
