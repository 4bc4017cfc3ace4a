-- A sale's line spread over several Redis line shards (issue #22 §2; README "A line that
-- outgrows one Redis: the design"): the number of shards, 1 to 64, fixed when the sale is
-- created. 1 (every sale made before this column) is the line on the sale's own slot.
-- Rearming a sale after Redis forgot it reads it back (core::sale::SaleConfig::load).
ALTER TABLE sales ADD COLUMN line_shards SMALLINT UNSIGNED NOT NULL DEFAULT 1;
