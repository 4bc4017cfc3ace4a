-- The door's sale fields (design/door.md, #19).
--
-- pow_difficulty      leading zero bits a join's proof of work must have; 0 = off (0..24).
-- access_groups       the priority groups, highest first, comma-separated names
--                     ([a-z0-9_-]{1,32}, at most 8; '' = none, only the implicit `public`).
--                     Not `groups`: that is a reserved word in MySQL 8.
-- presale_only_until  before this instant a join needs an access code; NULL = never.
-- notice              the operator's message to the line (at most 280 characters, no control
--                     characters, plain text); NULL = none.
ALTER TABLE sales
    ADD COLUMN pow_difficulty     TINYINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN access_groups      VARCHAR(300)     NOT NULL DEFAULT '',
    ADD COLUMN presale_only_until DATETIME(3)      NULL,
    ADD COLUMN notice             VARCHAR(280)     NULL,
    ADD CONSTRAINT ck_sales_pow CHECK (pow_difficulty <= 24);
