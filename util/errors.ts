/** Looking inside errors that wrap others. */

export interface ErrorLike {
  code?: unknown;
  message?: unknown;
  cause?: unknown;
}

/**
 * `err` and the errors it wraps through `cause`, outermost first. Duck-typed: errors thrown by another
 * realm (pg or the AWS SDK under jest) fail `instanceof Error`.
 */
export function causeChain(err: unknown): ErrorLike[] {
  const chain: ErrorLike[] = [];
  for (let e = err as ErrorLike | undefined; e && typeof e === 'object' && chain.length < 32; e = e.cause as ErrorLike)
    chain.push(e);
  return chain;
}
