import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hashFile, hashFileCached, writeFileAtomic } from '../../util/files';

const root = mkdtempSync(join(tmpdir(), 'operaflow-files-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The prototype of Node's FileHandle, to observe (not replace) its sync calls. */
async function fileHandlePrototype(): Promise<FileHandle> {
  const h = await open(__filename, 'r');
  await h.close();
  return Object.getPrototypeOf(h) as FileHandle;
}

afterEach(() => jest.restoreAllMocks());

describe('writeFileAtomic', () => {
  // Catches: parent folders not created, the bytes not written, or a wrong sha256 / byte count reported.
  it('creates missing folders, writes the bytes and reports their sha256 and size', async () => {
    const path = join(root, 'a', 'b', 'c', 'w.bin');
    const bytes = Buffer.from('hello, atomic world\n');
    const written = await writeFileAtomic(path, bytes);
    // sha256 computed here with node:crypto directly, independently of util/canonical.
    const expected = createHash('sha256').update(bytes).digest('hex');
    expect(written).toEqual({ path, sha256: expected, bytes: 20 });
    expect(readFileSync(path)).toEqual(bytes);
    expect(readdirSync(join(root, 'a', 'b', 'c'))).toEqual(['w.bin']); // no temp file left behind
  });

  // Catches: a write into an existing folder failing, or the old content surviving (or being appended to).
  it('replaces an existing file whole', async () => {
    const dir = join(root, 'replace');
    mkdirSync(dir);
    const path = join(dir, 'f.txt');
    writeFileSync(path, 'the old content, which is longer');
    await writeFileAtomic(path, Buffer.from('new'));
    expect(readFileSync(path, 'utf8')).toBe('new');
    expect(readdirSync(dir)).toEqual(['f.txt']);
  });

  // Catches: the data not fsynced before the rename, the directory entry not fsynced after it, a handle
  // left open, or a temp name that is not `<path>.tmp-<pid>-<8 hex digits>` (unique per process and call).
  it('writes a temp file beside the target, fsyncs it and the folder, and closes both handles', async () => {
    const dir = join(root, 'durable');
    const path = join(dir, 'out.bin');
    const proto = await fileHandlePrototype();
    const realSync = proto.sync;
    const listings: string[][] = [];
    const synced: FileHandle[] = [];
    jest.spyOn(proto, 'sync').mockImplementation(function (this: FileHandle) {
      synced.push(this);
      listings.push(readdirSync(dir)); // what the folder holds when each fsync happens
      return realSync.call(this);
    });
    await writeFileAtomic(path, Buffer.from([1, 2, 3]));
    expect(synced).toHaveLength(2);
    // First fsync: the temp file, before the rename (the target does not exist yet).
    expect(listings[0]).toHaveLength(1);
    expect(listings[0]![0]).toMatch(new RegExp(`^out\\.bin\\.tmp-${process.pid}-[0-9a-f]{8}$`));
    // Second fsync: the folder, after the rename.
    expect(listings[1]).toEqual(['out.bin']);
    // Both handles are closed once it resolves (a closed FileHandle reports fd -1).
    expect(synced[0]!.fd).toBe(-1);
    expect(synced[1]!.fd).toBe(-1);
  });

  // Catches: a failed rename reported as success, or its temp file left behind in the folder.
  it('rejects when the rename fails and removes its temp file', async () => {
    const dir = join(root, 'blocked');
    const path = join(dir, 'target');
    mkdirSync(join(path, 'inside'), { recursive: true }); // a non-empty folder where the file should go
    await expect(writeFileAtomic(path, Buffer.from('x'))).rejects.toThrow(/ENOTEMPTY|EISDIR|EEXIST/);
    expect(readdirSync(dir)).toEqual(['target']);
  });
});

describe('hashFileCached', () => {
  // Catches: a remembered hash surviving a write to the file (a changed base passing verification).
  it('equals hashFile, and hashes again after the file changes', async () => {
    const path = join(root, 'cached.bin');
    writeFileSync(path, 'one');
    expect(await hashFileCached(path)).toEqual(await hashFile(path));
    writeFileSync(path, 'two!');
    const again = await hashFileCached(path);
    expect(again).toEqual({ sha256: createHash('sha256').update('two!').digest('hex'), bytes: 4 });
  });
});
