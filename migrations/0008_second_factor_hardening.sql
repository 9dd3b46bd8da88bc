CREATE TABLE `mfa_challenges` (
	`jti` text PRIMARY KEY NOT NULL,
	`user_id` integer NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`used_at` integer,
	`expires_at` integer NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `mfa_challenges_expires_at_idx` ON `mfa_challenges` (`expires_at`);--> statement-breakpoint
CREATE INDEX `mfa_challenges_user_id_idx` ON `mfa_challenges` (`user_id`);--> statement-breakpoint
CREATE TABLE `spent_id_tokens` (
	`token_hash` text PRIMARY KEY NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `spent_id_tokens_expires_at_idx` ON `spent_id_tokens` (`expires_at`);--> statement-breakpoint
ALTER TABLE `external_identities` ADD `added_while_unverified` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `mfa_factors` ADD `added_while_unverified` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `sessions` ADD `authenticated_at` integer;--> statement-breakpoint
ALTER TABLE `users` ADD `all_sessions_ended_at` integer;--> statement-breakpoint
-- Sign-in methods of an account whose address is still unverified may have been added by whoever
-- registered the address first: a password reset by the mailbox's owner removes them. Nothing is
-- removed here; rows of verified accounts keep the default (added while verified).
UPDATE `external_identities` SET `added_while_unverified` = 1 WHERE `user_id` IN (SELECT `id` FROM `users` WHERE `email_verified` = 0);--> statement-breakpoint
UPDATE `mfa_factors` SET `added_while_unverified` = 1 WHERE `user_id` IN (SELECT `id` FROM `users` WHERE `email_verified` = 0);
