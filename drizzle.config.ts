/**
 * drizzle-kit configuration: `npm run db:generate` diffs db/schema.ts against the committed
 * snapshots and writes a new SQL migration into db/migrations/. Generation needs no database;
 * migrations are applied by db/migrate.ts (on `npm run services:up`, worker start and in tests).
 */
import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  schema: './db/schema.ts',
  out: './db/migrations',
  dbCredentials: { url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5433/operaflow' },
  strict: true,
  verbose: true,
});
