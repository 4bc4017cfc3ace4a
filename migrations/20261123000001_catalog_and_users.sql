-- Catalog and accounts: the tables the demo sale and `dropline user create` need.
-- Ids are UUIDv7 (time-ordered) stored as BINARY(16); times are UTC DATETIME(3);
-- money is an integer in minor units with an ISO 4217 currency code.

CREATE TABLE users (
    id                BINARY(16)    NOT NULL PRIMARY KEY,
    email             VARCHAR(254)  NOT NULL,
    password_hash     VARCHAR(255)  NOT NULL,
    name              VARCHAR(100)  NOT NULL,
    -- AES-256-GCM ciphertexts (key id || nonce || ciphertext), NULL when not given.
    phone_enc         VARBINARY(512)  NULL,
    address_enc       VARBINARY(2048) NULL,
    role              VARCHAR(16)   NOT NULL DEFAULT 'buyer',
    email_verified_at DATETIME(3)   NULL,
    created_at        DATETIME(3)   NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    UNIQUE KEY uq_users_email (email),
    CONSTRAINT ck_users_role CHECK (role IN ('buyer', 'admin'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE products (
    id          BINARY(16)   NOT NULL PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    description TEXT         NULL,
    price       BIGINT       NOT NULL,
    currency    CHAR(3)      NOT NULL DEFAULT 'KRW',
    created_at  DATETIME(3)  NOT NULL,
    CONSTRAINT ck_products_price CHECK (price >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE sales (
    id               BINARY(16)  NOT NULL PRIMARY KEY,
    product_id       BINARY(16)  NOT NULL,
    stock_total      INT         NOT NULL,
    -- Units in PAID orders; the CHECK makes overselling impossible at the last line of defence.
    sold             INT         NOT NULL DEFAULT 0,
    opens_at         DATETIME(3) NOT NULL,
    closes_at        DATETIME(3) NULL,
    per_user_limit   INT         NOT NULL DEFAULT 1,
    hold_seconds     INT         NOT NULL DEFAULT 600,
    admit_per_second INT         NOT NULL DEFAULT 100,
    max_active       INT         NULL,
    paused           BOOLEAN     NOT NULL DEFAULT FALSE,
    closed_at        DATETIME(3) NULL,
    created_at       DATETIME(3) NOT NULL,
    updated_at       DATETIME(3) NOT NULL,
    KEY ix_sales_opens_at (opens_at),
    CONSTRAINT fk_sales_product FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT ck_sales_stock CHECK (stock_total > 0 AND sold >= 0 AND sold <= stock_total),
    CONSTRAINT ck_sales_limits CHECK (per_user_limit > 0 AND hold_seconds > 0 AND admit_per_second > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
