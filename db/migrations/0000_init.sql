CREATE TABLE "artifacts" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" text NOT NULL,
	"kind" text NOT NULL,
	"iteration" integer DEFAULT 0 NOT NULL,
	"name" text NOT NULL,
	"uri" text NOT NULL,
	"sha256" text NOT NULL,
	"bytes" bigint NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "artifacts_key" UNIQUE("run_id","kind","iteration","name")
);
--> statement-breakpoint
CREATE TABLE "events" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" text NOT NULL,
	"type" text NOT NULL,
	"actor" text NOT NULL,
	"detail" jsonb,
	"at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "metrics" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" text NOT NULL,
	"step" integer NOT NULL,
	"name" text NOT NULL,
	"value" double precision NOT NULL,
	"recorded_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "metrics_key" UNIQUE("run_id","step","name")
);
--> statement-breakpoint
CREATE TABLE "runs" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text,
	"status" text NOT NULL,
	"config" jsonb NOT NULL,
	"config_hash" text NOT NULL,
	"code_version" text NOT NULL,
	"seed" integer NOT NULL,
	"workflow_id" text NOT NULL,
	"current_iteration" integer DEFAULT 0 NOT NULL,
	"summary" jsonb,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	CONSTRAINT "runs_status_check" CHECK ("status" IN ('pending', 'running', 'paused', 'blocked', 'completed', 'failed', 'cancelled'))
);
--> statement-breakpoint
CREATE TABLE "samples" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" text NOT NULL,
	"split" text NOT NULL,
	"iteration" integer NOT NULL,
	"prompt_id" text NOT NULL,
	"sample_index" integer NOT NULL,
	"prompt" text NOT NULL,
	"reference" text NOT NULL,
	"task_type" text NOT NULL,
	"response" text NOT NULL,
	"reward" double precision NOT NULL,
	"ppl" double precision NOT NULL,
	"reflection" double precision NOT NULL,
	"reflection_count" integer NOT NULL,
	"correct" boolean,
	"advantage" double precision,
	"logp_full" double precision,
	"logp_initial" double precision,
	"logp_segments" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "samples_key" UNIQUE("run_id","split","iteration","prompt_id","sample_index"),
	CONSTRAINT "samples_split_check" CHECK ("split" IN ('train', 'eval'))
);
--> statement-breakpoint
CREATE TABLE "stage_attempts" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" text NOT NULL,
	"stage" text NOT NULL,
	"iteration" integer DEFAULT 0 NOT NULL,
	"shard" integer DEFAULT 0 NOT NULL,
	"attempt" integer NOT NULL,
	"status" text NOT NULL,
	"worker" text,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	"duration_ms" integer,
	"error" text,
	"output" jsonb,
	CONSTRAINT "stage_attempts_key" UNIQUE("run_id","stage","iteration","shard","attempt"),
	CONSTRAINT "stage_attempts_status_check" CHECK ("status" IN ('running', 'completed', 'failed'))
);
--> statement-breakpoint
ALTER TABLE "artifacts" ADD CONSTRAINT "artifacts_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "events" ADD CONSTRAINT "events_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "metrics" ADD CONSTRAINT "metrics_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "samples" ADD CONSTRAINT "samples_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "stage_attempts" ADD CONSTRAINT "stage_attempts_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "events_run_at_idx" ON "events" USING btree ("run_id","at");--> statement-breakpoint
CREATE INDEX "runs_created_at_idx" ON "runs" USING btree ("created_at");