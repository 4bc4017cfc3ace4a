-- The post-sale report (#24): the durable copy of the figures the waiting room records in Redis
-- while a sale runs (audit/src/sale_report.rs; README "The post-sale report"). Written by the
-- expiry worker every few seconds with a merge that never lowers a count, read by
-- GET /api/admin/sales/{id}/report and `dropline sale report`. Kept 90 days after the sale ends
-- (sale_report::purge, run by the same worker), so at least the promised 30.
--
-- sale_report_seconds: one row per second since opens_at with a figure (t < 21,600)
--   arrivals      new places in line in that second
--   admissions    buyers admitted in that second
--   queue_length  waiting buyers after the second's last admission tick
-- sale_report_figures: the sale's totals and histograms by name (joined, joined_before_open, left,
--   sold_out_at (epoch ms), admitted_total, abandoned_total, active, w:<bucket>, e:<bucket>,
--   e_within, r:<reason>)
-- sale_report_copies: the copy's progress (last_t: the last second copied)
CREATE TABLE sale_report_seconds (
    sale_id      BINARY(16) NOT NULL,
    t            INT        NOT NULL,
    arrivals     BIGINT     NOT NULL DEFAULT 0,
    admissions   BIGINT     NOT NULL DEFAULT 0,
    queue_length BIGINT     NOT NULL DEFAULT 0,
    PRIMARY KEY (sale_id, t)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE sale_report_figures (
    sale_id BINARY(16)  NOT NULL,
    name    VARCHAR(32) NOT NULL,
    value   BIGINT      NOT NULL,
    PRIMARY KEY (sale_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE sale_report_copies (
    sale_id   BINARY(16)  NOT NULL PRIMARY KEY,
    last_t    INT         NOT NULL,
    copied_at DATETIME(3) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
