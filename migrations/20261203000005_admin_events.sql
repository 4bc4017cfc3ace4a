-- The audit trail (#24): one row per administrator's change made through the api, written in
-- the same transaction as the change, so a change never lacks its row and a failed one leaves
-- none (api/src/trail.rs).
--
-- id          UUIDv7 made inside the change's transaction: the trail's order (creation order within
--             one api process, time order to the millisecond across replicas)
-- at          server time of the change, to the millisecond (UTC)
-- admin_id    the administrator's user id (the access token's subject)
-- action      `product.create`, `sale.create`, `sale.update`, `codes.create`
-- sale_id     the sale the change is of (NULL for a product's own change)
-- product_id  the product the change is of (set for `product.*` actions only)
-- before_json the changed fields before (NULL for a create)
-- after_json  the changed fields after; access codes appear only as a count, never in plain text
--             nor as a hash
CREATE TABLE admin_events (
    id          BINARY(16)  NOT NULL,
    at          DATETIME(3) NOT NULL,
    admin_id    BINARY(16)  NOT NULL,
    action      VARCHAR(32) NOT NULL,
    sale_id     BINARY(16)  NULL,
    product_id  BINARY(16)  NULL,
    before_json LONGTEXT    NULL,
    after_json  LONGTEXT    NULL,
    PRIMARY KEY (id),
    KEY ix_admin_events_sale (sale_id, id),
    KEY ix_admin_events_product (product_id, id),
    CONSTRAINT ck_admin_events_before CHECK (before_json IS NULL OR JSON_VALID(before_json)),
    CONSTRAINT ck_admin_events_after CHECK (after_json IS NULL OR JSON_VALID(after_json))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
