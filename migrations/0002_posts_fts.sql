-- Full-text search over posts (title, body): an external-content FTS5 index kept in sync by
-- triggers, so every write path (API, seed, admin SQL) updates it in the same transaction.
-- Hand-written (drizzle-kit generate --custom): drizzle-kit does not model virtual tables.
CREATE VIRTUAL TABLE `posts_fts` USING fts5(
	`title`,
	`body`,
	content='posts',
	content_rowid='id',
	tokenize='unicode61 remove_diacritics 2'
);
--> statement-breakpoint
CREATE TRIGGER `posts_fts_after_insert` AFTER INSERT ON `posts` BEGIN
	INSERT INTO `posts_fts`(rowid, `title`, `body`) VALUES (new.`id`, new.`title`, new.`body`);
END;
--> statement-breakpoint
CREATE TRIGGER `posts_fts_after_delete` AFTER DELETE ON `posts` BEGIN
	INSERT INTO `posts_fts`(`posts_fts`, rowid, `title`, `body`) VALUES ('delete', old.`id`, old.`title`, old.`body`);
END;
--> statement-breakpoint
CREATE TRIGGER `posts_fts_after_update` AFTER UPDATE OF `title`, `body` ON `posts` BEGIN
	INSERT INTO `posts_fts`(`posts_fts`, rowid, `title`, `body`) VALUES ('delete', old.`id`, old.`title`, old.`body`);
	INSERT INTO `posts_fts`(rowid, `title`, `body`) VALUES (new.`id`, new.`title`, new.`body`);
END;
