/**
 * The S3 server globalSetup brought up (a local moto server, or OPERAFLOW_S3_ENDPOINT) answers real S3
 * requests: a bucket and an object go in and come back out (path-style, plain HTTP, no SDK). A closed
 * port fails the health check with the reason, and asking for the server again reuses it.
 */
import net from 'node:net';
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import { s3Client } from '../../activities/store-s3';
import { LOCAL_BUCKET, checkS3, startLocalS3 } from '../../services/s3';

const endpoint = process.env.OPERAFLOW_S3_ENDPOINT!;
const original = JSON.parse(process.env.OPERAFLOW_TEST_ORIGINAL_ENV ?? '{}') as { OPERAFLOW_S3_ENDPOINT?: string };

test('globalSetup gave an endpoint that passes the health check', async () => {
  expect(endpoint).toMatch(/^https?:\/\//);
  await expect(checkS3(endpoint)).resolves.toEqual({ ok: true });
});

test('a local server started by operaflow holds the bucket runs use by default', async () => {
  if (original.OPERAFLOW_S3_ENDPOINT) return; // an external server: its buckets are its owner's business
  await expect(s3Client().send(new HeadBucketCommand({ Bucket: LOCAL_BUCKET }))).resolves.toBeDefined();
});

test('a bucket and an object round-trip through the server', async () => {
  const bucket = `operaflow-s3-test-${process.pid}-${Date.now()}`;
  const key = 'runs/r1/hello world.txt';
  const body = `hello from ${process.pid}\n`;
  const objectUrl = `${endpoint}/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  const putBucket = await fetch(`${endpoint}/${bucket}`, { method: 'PUT' });
  expect(putBucket.status).toBe(200);
  // Unsigned requests are anonymous: S3 (and moto) refuse them a private object, so this one is public-read.
  const putObject = await fetch(objectUrl, {
    method: 'PUT',
    body,
    headers: { 'content-type': 'text/plain', 'x-amz-acl': 'public-read' },
  });
  expect(putObject.status).toBe(200);
  const get = await fetch(objectUrl);
  expect(get.status).toBe(200);
  expect(get.headers.get('content-type')).toBe('text/plain');
  expect(await get.text()).toBe(body);
});

test('checkS3 on a closed port fails with the reason', async () => {
  // A port that was free a moment ago: nothing listens there now.
  const port = await new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = server.address() as net.AddressInfo;
      server.close(() => resolve(p));
    });
  });
  const r = await checkS3(`http://127.0.0.1:${port}`, 2_000);
  expect(r.ok).toBe(false);
  expect(!r.ok && r.error).toMatch(/ECONNREFUSED/);
});

test('startLocalS3 again reuses the running server', async () => {
  // With the env the user started jest with: the local server is found through its pid file, as `services:up` finds it.
  const saved = process.env.OPERAFLOW_S3_ENDPOINT;
  if (original.OPERAFLOW_S3_ENDPOINT === undefined) delete process.env.OPERAFLOW_S3_ENDPOINT;
  else process.env.OPERAFLOW_S3_ENDPOINT = original.OPERAFLOW_S3_ENDPOINT;
  try {
    const t0 = Date.now();
    const again = await startLocalS3();
    expect(again).toMatchObject({ endpoint, started: false });
    expect(Date.now() - t0).toBeLessThan(5_000);
  } finally {
    process.env.OPERAFLOW_S3_ENDPOINT = saved;
  }
});
