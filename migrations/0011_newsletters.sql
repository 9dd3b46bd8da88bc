-- Newsletters (a post mailed to the list), their per-recipient ledger, and the provider webhooks
-- already applied. Additive: new tables, one new index on subscribers, and the posts publication index
-- rebuilt to cover published and scheduled posts only (a drafts list then uses the drafts index); no row is touched.
CREATE TABLE `email_events` (
	`webhook_id` text PRIMARY KEY NOT NULL,
	`type` text NOT NULL,
	`received_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `email_events_received_at_idx` ON `email_events` (`received_at`);--> statement-breakpoint
CREATE TABLE `newsletter_deliveries` (
	`newsletter_id` integer NOT NULL,
	`subscriber_id` integer NOT NULL,
	`email` text NOT NULL,
	`batch_no` integer NOT NULL,
	`status` text NOT NULL,
	`error` text,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`newsletter_id`, `subscriber_id`),
	FOREIGN KEY (`newsletter_id`) REFERENCES `newsletters`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `newsletter_deliveries_batch_idx` ON `newsletter_deliveries` (`newsletter_id`,`batch_no`,`subscriber_id`);--> statement-breakpoint
CREATE TABLE `newsletters` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`post_id` integer NOT NULL,
	`status` text NOT NULL,
	`recipients` integer,
	`sent` integer DEFAULT 0 NOT NULL,
	`failed` integer DEFAULT 0 NOT NULL,
	`skipped` integer DEFAULT 0 NOT NULL,
	`created_by` integer,
	`api_origin` text NOT NULL,
	`subject` text,
	`text` text,
	`post_url` text,
	`snapshot_after_id` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL,
	`scheduled_for` integer,
	`started_at` integer,
	`completed_at` integer,
	FOREIGN KEY (`post_id`) REFERENCES `posts`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`created_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE UNIQUE INDEX `newsletters_post_id_unique` ON `newsletters` (`post_id`);--> statement-breakpoint
CREATE INDEX `newsletters_status_scheduled_for_idx` ON `newsletters` (`status`,`scheduled_for`);--> statement-breakpoint
CREATE INDEX `newsletters_created_by_idx` ON `newsletters` (`created_by`);--> statement-breakpoint
DROP INDEX `posts_published_at_id_idx`;--> statement-breakpoint
CREATE INDEX `posts_published_at_id_idx` ON `posts` (`published_at`,`id`) WHERE published_at is not null;--> statement-breakpoint
CREATE INDEX `subscribers_status_id_idx` ON `subscribers` (`status`,`id`);