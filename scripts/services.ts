/**
 * `npm run services:up | services:down | services:status`: the PostgreSQL, Temporal and S3 servers
 * operaflow uses, started locally unless DATABASE_URL / TEMPORAL_ADDRESS / OPERAFLOW_S3_ENDPOINT point at
 * running ones.
 */
import { ensureServices, markServicesKept, servicesStatus, stopServices } from '../services';
import { LOCAL_BUCKET } from '../services/s3';
import { checkEnvironment } from '../util/env';

const USAGE = 'usage: tsx scripts/services.ts up|down|status';

async function main(): Promise<void> {
  checkEnvironment();
  const command = process.argv[2];
  const log = (line: string) => console.log(line);
  if (command === 'up') {
    const t0 = Date.now();
    const s = await ensureServices({ log, s3: true });
    markServicesKept(true);
    console.log(
      `Services ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (database migrated). To use them from other shells and tools:`,
    );
    console.log(`export DATABASE_URL=${s.databaseUrl}`);
    console.log(`export TEMPORAL_ADDRESS=${s.temporalAddress}`);
    if (s.s3Endpoint && !process.env.OPERAFLOW_S3_ENDPOINT) {
      // The local server (moto) takes any credentials; the AWS SDK still needs some to sign with.
      console.log(
        `export OPERAFLOW_S3_ENDPOINT=${s.s3Endpoint} AWS_ACCESS_KEY_ID=operaflow AWS_SECRET_ACCESS_KEY=operaflow`,
      );
      console.log(`# runs may then use runtime.artifacts: s3://${LOCAL_BUCKET}/<prefix> (the local server's bucket)`);
    } else if (s.s3Endpoint) console.log(`export OPERAFLOW_S3_ENDPOINT=${s.s3Endpoint}`);
  } else if (command === 'down') {
    markServicesKept(false);
    const stopped = await stopServices({ log });
    if (!stopped.postgres && !stopped.temporal && !stopped.s3)
      console.log('Nothing to stop: no local service of this checkout is running.');
    if (process.env.DATABASE_URL || process.env.TEMPORAL_ADDRESS || process.env.OPERAFLOW_S3_ENDPOINT)
      console.log(
        'Services given by DATABASE_URL / TEMPORAL_ADDRESS / OPERAFLOW_S3_ENDPOINT are not managed here and were left running.',
      );
  } else if (command === 'status') {
    const statuses = await servicesStatus();
    for (const s of statuses) {
      console.log(
        `${s.service.padEnd(9)} ${s.healthy ? 'up  ' : 'down'}  ${s.origin.padEnd(8)} ${s.address ?? '-'}  ${s.detail}`,
      );
    }
    // S3 is optional (only the S3 artifact store uses it): down is a failure only when it should be up.
    if (!statuses.every((s) => s.healthy || (s.service === 's3' && s.origin === 'none'))) {
      console.log('Start them with `npm run services:up`.');
      process.exitCode = 1;
    }
  } else {
    throw new Error(USAGE);
  }
}

main().catch((err: Error) => {
  console.error(err.message);
  process.exit(1);
});
