/** `s3://bucket/key` URIs: parsed and checked here, shared by the config schema and the S3 artifact store. */
export interface S3Location {
  bucket: string;
  /** The object key (no leading slash); for a prefix, without a trailing slash. */
  key: string;
}

/** Bucket names as S3 allows them (3-63 lowercase letters, digits, dots and hyphens). */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** `s3://bucket/key…` → its bucket and key; a problem (for config validation) as a thrown Error. */
export function parseS3Uri(uri: string): S3Location {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/.exec(uri);
  if (!m) throw new Error(`${uri} is not an s3://bucket/prefix URI`);
  const bucket = m[1]!;
  if (!BUCKET.test(bucket))
    throw new Error(`${uri}: "${bucket}" is not a valid S3 bucket name (3-63 lowercase letters, digits, . and -)`);
  const key = (m[2] ?? '').replace(/\/+$/, '');
  if (key && key.split('/').some((part) => part === '..' || part === '.' || part === ''))
    throw new Error(`${uri}: the prefix may not contain empty, . or .. segments`);
  return { bucket, key };
}

export const s3Uri = (loc: S3Location): string => `s3://${loc.bucket}${loc.key ? `/${loc.key}` : ''}`;
export const joinKey = (...parts: string[]): string => parts.filter(Boolean).join('/');
