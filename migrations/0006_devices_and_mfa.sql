-- Devices (sessions carry a device label, and the country and Cloudflare location of the login and
-- of the last refresh) and TOTP two-factor sign-in. Additive only: new tables and nullable or
-- defaulted columns; no table is recreated, so no session, post or token cascades away.
CREATE TABLE `mfa_factors` (
	`user_id` integer PRIMARY KEY NOT NULL,
	`secret_sealed` text NOT NULL,
	`created_at` integer NOT NULL,
	`confirmed_at` integer,
	`last_step` integer,
	`failed_attempts` integer DEFAULT 0 NOT NULL,
	`failed_window_start` integer,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `mfa_recovery_codes` (
	`code_hash` text PRIMARY KEY NOT NULL,
	`user_id` integer NOT NULL,
	`created_at` integer NOT NULL,
	`used_at` integer,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `mfa_recovery_codes_user_id_idx` ON `mfa_recovery_codes` (`user_id`);--> statement-breakpoint
ALTER TABLE `sessions` ADD `device_label` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `login_country` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `login_colo` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `last_used_at` integer;--> statement-breakpoint
ALTER TABLE `sessions` ADD `last_country` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `last_colo` text;--> statement-breakpoint
ALTER TABLE `users` ADD `mfa_enabled` integer DEFAULT false NOT NULL;