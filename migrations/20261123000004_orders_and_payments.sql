-- Orders and payments (DESIGN §5, §8).
--
-- Redis decides every order arrow (lua/*.lua); MySQL follows:
-- - the recorder (workers/src/recorder.rs) copies each arrow from the sale's outbox stream,
--   never moving a row backwards (held < paying < the end states, and an end state is kept);
-- - the confirm worker alone writes `paid`, in one transaction with `sales.sold`, so the sold
--   count and the paid rows cannot disagree, and `ck_sales_stock` refuses an oversell.

CREATE TABLE orders (
    id              BINARY(16)   NOT NULL PRIMARY KEY,
    sale_id         BINARY(16)   NOT NULL,
    user_id         BINARY(16)   NOT NULL,
    quantity        INT          NOT NULL,
    -- price x quantity at reservation, minor units of `currency`.
    amount          BIGINT       NOT NULL,
    currency        CHAR(3)      NOT NULL,
    status          VARCHAR(16)  NOT NULL,
    -- The hold's end while held, the payment deadline while paying, the last one after.
    deadline_at     DATETIME(3)  NOT NULL,
    idempotency_key VARCHAR(64)  NOT NULL,
    created_at      DATETIME(3)  NOT NULL,
    updated_at      DATETIME(3)  NOT NULL,
    -- A buyer's own orders, newest first (GET /api/orders, keyset on the UUIDv7 id).
    KEY ix_orders_user (user_id, id),
    -- Audit and rearm: a sale's orders by state.
    KEY ix_orders_sale_status (sale_id, status),
    CONSTRAINT fk_orders_sale FOREIGN KEY (sale_id) REFERENCES sales (id),
    CONSTRAINT ck_orders_status CHECK (status IN ('held', 'paying', 'paid', 'expired', 'cancelled', 'failed')),
    CONSTRAINT ck_orders_quantity CHECK (quantity > 0 AND amount >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One payment per order: the provider is asked with the order id as its idempotency key and
-- the unique key makes a second row impossible, so an order is never charged twice.
CREATE TABLE payments (
    id           BINARY(16)   NOT NULL PRIMARY KEY,
    order_id     BINARY(16)   NOT NULL,
    sale_id      BINARY(16)   NOT NULL,
    amount       BIGINT       NOT NULL,
    currency     CHAR(3)      NOT NULL,
    -- approved | declined | refunded
    status       VARCHAR(16)  NOT NULL,
    -- The provider's reference for an approved charge; its reason for a decline.
    provider_ref VARCHAR(128) NOT NULL,
    created_at   DATETIME(3)  NOT NULL,
    updated_at   DATETIME(3)  NOT NULL,
    UNIQUE KEY uq_payments_order (order_id),
    CONSTRAINT ck_payments_status CHECK (status IN ('approved', 'declined', 'refunded'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
