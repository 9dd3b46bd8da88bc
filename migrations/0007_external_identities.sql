-- Native sign-in with OpenID Connect providers (Sign in with Apple, Google): one row per linked
-- provider account. Additive only: a new table and its index; no table is recreated.
CREATE TABLE `external_identities` (
	`provider` text NOT NULL,
	`sub` text NOT NULL,
	`user_id` integer NOT NULL,
	`email` text,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`provider`, `sub`),
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `external_identities_user_id_idx` ON `external_identities` (`user_id`);