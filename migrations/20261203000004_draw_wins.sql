-- Draw wins (design/draw.md "Claims and backfill", #23): what the draw leader recorded of each
-- promotion, from the draw outbox (Redis `dev`), so that `sale rearm` can rebuild the wins and
-- `GET /w/{id}/draw/winners` can list them.
--
-- won_at          when the entry was promoted (NULL: never promoted)
-- max_quantity    the most units the win may buy (min(per_user_limit, free stock) at promotion)
-- claim_deadline  the win's deadline to order (the pass's expiry)
-- outcome         'claiming' (promoted, not settled), 'claimed' (its order was paid) or
--                 'forfeited' (no order by the deadline, or the order ended unpaid)
-- order_id        the win's order, once settled with one
-- won_mail_at / not_won_mail_at: the mail for this entry was queued (ids are UUIDv5, so a
--                 replay is dropped by the mail worker anyway; these keep the leader from
--                 publishing again after a restart)
ALTER TABLE draw_entries
    ADD COLUMN won_at          DATETIME(3)  NULL,
    ADD COLUMN max_quantity    INT UNSIGNED NULL,
    ADD COLUMN claim_deadline  DATETIME(3)  NULL,
    ADD COLUMN outcome         ENUM('claiming', 'claimed', 'forfeited') NULL,
    ADD COLUMN order_id        BINARY(16)   NULL,
    ADD COLUMN won_mail_at     DATETIME(3)  NULL,
    ADD COLUMN not_won_mail_at DATETIME(3)  NULL,
    ADD KEY ix_draw_entries_sale_won (sale_id, won_at);

-- ended_at: the draw is over (sold out, or the ranking exhausted with no live win, or the sale
-- closed) and every never-promoted entrant's mail was queued.
ALTER TABLE draws
    ADD COLUMN ended_at DATETIME(3) NULL;
