ALTER TABLE "stage_attempts" DROP CONSTRAINT "stage_attempts_status_check";--> statement-breakpoint
ALTER TABLE "stage_attempts" ADD COLUMN "progress" jsonb;--> statement-breakpoint
ALTER TABLE "stage_attempts" ADD CONSTRAINT "stage_attempts_status_check" CHECK ("status" IN ('running', 'completed', 'failed', 'lost'));