import { parseRunConfig } from '../../config/load';

describe('reward.kind', () => {
  it('defaults to opera and accepts every kind', () => {
    expect(parseRunConfig('name: x\n', 'a.yaml').reward.kind).toBe('opera');
    for (const kind of ['opera', 'likelihood', 'exact'])
      expect(parseRunConfig(`name: x\nreward: { kind: ${kind} }\n`, 'a.yaml').reward.kind).toBe(kind);
  });

  it('refuses an unknown kind, naming the key and the kinds', () => {
    expect(() => parseRunConfig('name: x\nreward:\n  kind: bogus\n', 'b.yaml')).toThrow(
      /^b\.yaml:3: reward\.kind: .*opera.*likelihood.*exact/s,
    );
  });
});
