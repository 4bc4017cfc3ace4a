-- The Stripe provider's claim row (design/payments.md "Claim"): one per order, inserted
-- (`INSERT IGNORE`, state `creating`) before Stripe is asked to create a PaymentIntent, so two
-- workers, a redelivery or a second `pay` find the row and follow it instead of creating a
-- second intent. Only the intent recorded here is ever confirmed: an orphan (created by a
-- worker that lost the race to record its id) is cancelled and never charges. No card data.
CREATE TABLE payment_intents (
    order_id       BINARY(16)   NOT NULL PRIMARY KEY,
    -- NULL only on a claim the sweeper voided before any worker claimed it (it knows the
    -- order alone); the amount and currency are the order's (`orders`).
    sale_id        BINARY(16)   NULL,
    -- creating: claimed, no intent recorded yet | created: `intent_id` recorded |
    -- voided: the sweeper ended the claim before an intent was recorded (never charges).
    state          VARCHAR(16)  NOT NULL,
    -- The first card token (a PaymentMethod id); later ones are ignored. NULL as sale_id.
    payment_method VARCHAR(128) NULL,
    intent_id      VARCHAR(255) NULL,
    -- The intent's last status seen by a worker (processing, requires_action, succeeded, ...).
    intent_status  VARCHAR(32)  NULL,
    -- Why it was declined (Stripe's error or decline code), when it was.
    reason         VARCHAR(128) NULL,
    -- The buyer's next step while `requires_action` (the `payment.next_action` of GET
    -- /api/orders/{id}), as JSON text.
    next_action    TEXT         NULL,
    refund_id      VARCHAR(255) NULL,
    created_at     DATETIME(3)  NOT NULL,
    updated_at     DATETIME(3)  NOT NULL,
    UNIQUE KEY uq_payment_intents_intent (intent_id),
    -- `dropline payments reconcile <sale>`.
    KEY ix_payment_intents_sale (sale_id),
    CONSTRAINT ck_payment_intents_state CHECK (state IN ('creating', 'created', 'voided'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
