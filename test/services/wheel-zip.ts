import yazl from 'yazl';

/** A wheel (a zip) in memory holding `entries` (name → bytes); entries in `executable` get mode 755. */
export function wheelZip(entries: Record<string, Buffer>, executable: string[] = []): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, bytes] of Object.entries(entries))
    zip.addBuffer(bytes, name, { mode: executable.includes(name) ? 0o100755 : 0o100644 });
  zip.end();
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    zip.outputStream.on('data', (d: Buffer) => parts.push(d));
    zip.outputStream.on('end', () => resolve(Buffer.concat(parts)));
    zip.outputStream.on('error', reject);
  });
}
