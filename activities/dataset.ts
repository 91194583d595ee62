/** Stage `prepareDataset`: the run's data source → validated, de-duplicated, split rows (an artifact) and data metrics. */
import { join } from 'node:path';
import { prepareDataset as prepareRunDataset } from '../config/dataset';
import { upsertMetrics } from '../db/queries';
import { getTokenizer, promptTokens } from './engine';
import { ConfigError, PermanentError, type DatasetFile, type Runtime } from './runtime';
import { putJson } from './store';
import type { DatasetRef, StageInput } from './types';

export const datasetActivities = (rt: Runtime) => ({
  async prepareDataset(input: StageInput): Promise<DatasetRef> {
    const { runId, iteration } = input;
    return rt.stage({ runId, stage: 'prepareDataset', iteration, shard: 0 }, async () => {
      const config = await rt.runConfig(runId);
      const tok = await getTokenizer(config.model.tokenizer, config.data.chatTemplate);
      let prepared: Awaited<ReturnType<typeof prepareRunDataset>>;
      try {
        prepared = await prepareRunDataset(config.data, config.seed, {
          promptTokens: (p) => promptTokens(tok, p).length,
        });
      } catch (err) {
        // The data itself is wrong (a bad row, a missing file): retrying cannot fix that, an operator can.
        throw new PermanentError(err instanceof Error ? err.message : String(err));
      }
      if (prepared.train.length === 0) throw new PermanentError(`dataset ${config.data.source}: no training rows`);
      if (prepared.eval.length === 0)
        throw new ConfigError(`dataset ${config.data.source}: no evaluation rows (raise data.evalFraction)`, [
          'data.evalFraction',
        ]);
      const file: DatasetFile = { hash: prepared.hash, train: prepared.train, eval: prepared.eval };
      const artifact = await putJson(
        rt.db,
        rt.store(config),
        { runId, kind: 'dataset', iteration: 0, name: 'dataset.json' },
        join(rt.runDir(config, runId), 'dataset.json'),
        file,
      );
      await upsertMetrics(rt.db, runId, 0, {
        'data/train_rows': prepared.counts.train,
        'data/eval_rows': prepared.counts.eval,
        'data/duplicates': prepared.counts.duplicates,
        'data/too_long': prepared.counts.tooLong,
      });
      return { artifact, hash: prepared.hash, train: prepared.train.length, eval: prepared.eval.length };
    });
  },
});
