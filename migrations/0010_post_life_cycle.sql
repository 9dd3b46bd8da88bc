-- Posts gain a life cycle (draft, scheduled, published) and a slug. Additive: no table is
-- rebuilt, so no row, trigger (posts_fts) or child row is touched.
-- SQLite adds a NOT NULL column only with a default. '' is never kept: every row gets its slug
-- below, before the unique index; the application always writes one; and a row inserted by other
-- means (admin SQL, an older seed script) without one gets `post-<id>` from the trigger at the end.
ALTER TABLE `posts` ADD `slug` text NOT NULL DEFAULT '';--> statement-breakpoint
ALTER TABLE `posts` ADD `published_at` integer;--> statement-breakpoint
-- Every existing post was public from its creation: it stays published, from then.
UPDATE `posts` SET `published_at` = `created_at`;--> statement-breakpoint
-- Slugs of existing posts: `post-<id>`, unique by construction and stable. Deriving them from the
-- titles needs Unicode folding SQL does not have; an author may set a nicer one (PATCH slug).
UPDATE `posts` SET `slug` = 'post-' || `id`;--> statement-breakpoint
CREATE INDEX `posts_published_at_id_idx` ON `posts` (`published_at`,`id`);--> statement-breakpoint
CREATE INDEX `posts_author_published_at_id_idx` ON `posts` (`author_id`,`published_at`,`id`);--> statement-breakpoint
CREATE INDEX `posts_drafts_updated_at_id_idx` ON `posts` (`updated_at`,`id`) WHERE published_at is null;--> statement-breakpoint
CREATE INDEX `posts_author_drafts_updated_at_id_idx` ON `posts` (`author_id`,`updated_at`,`id`) WHERE published_at is null;--> statement-breakpoint
CREATE UNIQUE INDEX `posts_slug_unique` ON `posts` (`slug`);--> statement-breakpoint
CREATE TRIGGER `posts_slug_fallback` AFTER INSERT ON `posts` WHEN new.`slug` = '' BEGIN
	UPDATE `posts` SET `slug` = 'post-' || new.`id` WHERE `id` = new.`id`;
END;
