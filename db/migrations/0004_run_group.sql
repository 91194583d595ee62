ALTER TABLE "runs" ADD COLUMN "group" text;--> statement-breakpoint
CREATE INDEX "runs_group_idx" ON "runs" USING btree ("group");