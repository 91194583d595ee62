/**
 * The reward-hacking probe of `npm run experiment`: held-out gold responses (the cold-start format,
 * `<think>trace</think>answer`, of evaluation prompts the model never trained on) scored by an SFT
 * checkpoint as they are and with information-free steps inserted (opera/probe.ts), then rewarded by
 * every reward kind. Each response is a group of its own, so OPERA's ranking term is constant and only
 * its reflection term can move; the EMA baseline is the batch's own.
 */
import type { DatasetFile } from '../../activities/runtime';
import { getTokenizer, inferenceModel, scoreResponses } from '../../activities/engine';
import { getJson } from '../../activities/store';
import type { RunConfig } from '../../config/schema';
import type { Db } from '../../db/client';
import { recordedRunState } from '../../db/queries';
import { PROBE_FILLERS } from '../../opera/probe';
import { withFillers } from '../../opera/probe';
import { rewardsByKind, type RewardKind } from '../../opera/reward-kinds';
import { coldStartSet } from '../../opera/synthetic';
import type { ProbeRow } from './experiment-report';

/** The rewards the probe reads: each kind, OPERA with both keyword rules. */
const PROBE_REWARDS: readonly { label: string; kind: RewardKind; keywordMatch?: 'word' | 'substring' }[] = [
  { label: 'opera/word', kind: 'opera', keywordMatch: 'word' },
  { label: 'opera/substring', kind: 'opera', keywordMatch: 'substring' },
  { label: 'likelihood', kind: 'likelihood' },
  { label: 'exact', kind: 'exact' },
];

/** At most this many held-out responses (scoring is the probe's cost). */
const PROBE_RESPONSES = 24;

export async function runProbe(
  db: Db,
  runId: string,
  config: RunConfig,
): Promise<{ checkpoint: string; responses: number; rows: ProbeRow[] }> {
  const state = await recordedRunState(db, runId);
  if (!state) throw new Error(`probe: run ${runId} has no completed cold-start SFT to score with`);
  const data = await getJson<DatasetFile>(state.dataset.artifact);
  const rows = data.eval.slice(0, PROBE_RESPONSES);
  const byId = new Map(rows.map((r) => [r.id, r]));
  const gold = coldStartSet(rows, 0).filter((g) => byId.has(g.id));
  const tok = await getTokenizer(config.model.tokenizer, config.data.chatTemplate);
  const model = await inferenceModel(state.reference, config.runtime.providers);

  const versions: [label: string, responses: string[]][] = [
    ['none', gold.map((g) => g.response)],
    ...Object.entries(PROBE_FILLERS).map(([name, fillers]): [string, string[]] => [
      name,
      gold.map((g) => withFillers(g.response, fillers)),
    ]),
  ];
  const meanReward = new Map<string, number>();
  for (const [version, responses] of versions) {
    const scores = await scoreResponses(
      model,
      tok,
      gold.map((g, k) => ({ prompt: g.prompt, reference: byId.get(g.id)!.reference, response: responses[k]! })),
    );
    const groups = gold.map((g, k) => ({
      taskType: byId.get(g.id)!.taskType,
      reference: byId.get(g.id)!.reference,
      rollouts: [{ response: responses[k]!, ...scores[k]! }],
    }));
    for (const r of PROBE_REWARDS) {
      const options = { ...config.reward, ...(r.keywordMatch ? { keywordMatch: r.keywordMatch } : {}) };
      const totals = rewardsByKind(r.kind, groups, null, options).rewards.map((group) => group[0]!.total);
      meanReward.set(`${version}|${r.label}`, totals.reduce((a, b) => a + b, 0) / totals.length);
    }
  }
  const rows_: ProbeRow[] = Object.entries(PROBE_FILLERS).flatMap(([name, fillers]) =>
    PROBE_REWARDS.map((r) => ({
      fillers: `${name}: ${fillers.map((f) => `"${f}"`).join(' ')}`,
      kind: r.label,
      without: meanReward.get(`none|${r.label}`)!,
      with: meanReward.get(`${name}|${r.label}`)!,
    })),
  );
  return {
    checkpoint: `${runId} cold-start SFT (${state.reference.sha256.slice(0, 12)})`,
    responses: gold.length,
    rows: rows_,
  };
}
