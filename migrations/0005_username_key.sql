-- Usernames get a key computed in code (src/lib/usernames.ts: NFKC and full case folding), unique.
-- Additive only: a new nullable column and a new index; `users` is not recreated, so no session,
-- post or token cascades away, and the lower(username) index stays (docs/design.md § Usernames).
ALTER TABLE `users` ADD `username_key` text;--> statement-breakpoint
-- For a pure ASCII name (as many bytes as characters) the key is exactly lower(username): SQLite's
-- lower() folds A-Z, which is all the case ASCII has, and NFKC leaves ASCII alone. These keys are
-- unique already (users_username_lower_unique). Every other row keeps NULL until the code fills it
-- in (backfillUsernameKeys in src/db/users.ts: the first login or registration, and the cron).
UPDATE `users` SET `username_key` = lower(`username`) WHERE length(CAST(`username` AS BLOB)) = length(`username`);--> statement-breakpoint
CREATE UNIQUE INDEX `users_username_key_unique` ON `users` (`username_key`);
