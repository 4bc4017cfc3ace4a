-- Draw entries (design/draw.md "Entering", #23): one row per (sale, account), the durable
-- record an `entered` answer rests on (written before the answer; Redis only indexes it).
--
-- id            the entry id: 16 CSPRNG bytes, public as 32 lowercase hex digits
-- entered_at    the first entry; a rejoin after withdrawing keeps it (and the id)
-- withdrawn_at  set by DELETE /w/{id}/join before the freeze, cleared by a rejoin
-- draw_rank     1-based place in the ranking, written once the seed is revealed (NULL before,
--               and for entries withdrawn at the freeze)
ALTER TABLE draws
    ADD COLUMN ranked_at DATETIME(3) NULL;

CREATE TABLE draw_entries (
    id           BINARY(16)   NOT NULL PRIMARY KEY,
    sale_id      BINARY(16)   NOT NULL,
    user_id      BINARY(16)   NOT NULL,
    entered_at   DATETIME(3)  NOT NULL,
    withdrawn_at DATETIME(3)  NULL,
    draw_rank    INT UNSIGNED NULL,
    UNIQUE KEY uq_draw_entries_sale_user (sale_id, user_id),
    UNIQUE KEY uq_draw_entries_sale_rank (sale_id, draw_rank),
    CONSTRAINT fk_draw_entries_sale FOREIGN KEY (sale_id) REFERENCES sales (id)
);
