-- A table that never holds a row: inserting NULL into it fails the D1 batch the statement runs in
-- (src/db/guards.ts), so a batch can refuse to land unless a condition holds. Additive.
CREATE TABLE `batch_guards` (
	`guard` text NOT NULL
);
