-- The product catalogue and what recommendations are computed from.
--
-- products, product_changes: owned by store/products.py. One row per SKU as the last product.updated event
-- left it; product_changes records each price drop / back-in-stock it caused, keyed by a deterministic id,
-- so a replayed batch finds (and emits again) the changes it made the first time instead of losing them.
CREATE TABLE IF NOT EXISTS products (
    sku           text        NOT NULL,
    name          text,
    category_path text[]      NOT NULL DEFAULT '{}',
    category      text,
    brand         text,
    price         numeric,
    old_price     numeric,
    currency      text,
    availability  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    stock_total   numeric     NOT NULL DEFAULT 0,
    image_url     text,
    product_url   text,
    durable       boolean     NOT NULL DEFAULT false,
    active        boolean     NOT NULL DEFAULT true,
    source        text,
    event_id      uuid,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (sku)
) /*gp: DISTRIBUTED BY (sku) */;
CREATE INDEX IF NOT EXISTS products_category_idx ON products (category, price);

CREATE TABLE IF NOT EXISTS product_changes (
    change_id      uuid        NOT NULL,
    event_id       uuid        NOT NULL,
    sku            text        NOT NULL,
    kind           text        NOT NULL,
    price          numeric,
    previous_price numeric,
    occurred_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (change_id)
) /*gp: DISTRIBUTED BY (change_id) */;
CREATE INDEX IF NOT EXISTS product_changes_event_idx ON product_changes (event_id);

-- The audience of a price drop is found by SKU among recent product views: without this index that is a scan
-- of every event in the window for every catalogue batch.
CREATE INDEX IF NOT EXISTS events_viewed_sku_idx ON events (((body->'properties'->>'sku')), occurred_at)
    WHERE type = 'product.viewed';

-- order_lines, product_pairs, product_popularity: owned by store/recommendations.py, rebuilt by
-- `cdp-hub recommend refresh` (set-wise statements, no MERGE).
-- order_lines: one row per SKU of an order.placed event in the window, with the buyer's region.
CREATE TABLE IF NOT EXISTS order_lines (
    order_event_id uuid        NOT NULL,
    sku            text        NOT NULL,
    profile_id     uuid,
    ordered_at     timestamptz NOT NULL,
    region         text        NOT NULL DEFAULT '',
    PRIMARY KEY (order_event_id, sku)
) /*gp: DISTRIBUTED BY (order_event_id) */;
CREATE INDEX IF NOT EXISTS order_lines_profile_idx ON order_lines (profile_id);

-- "Bought together": the best partners of each SKU (co-occurrence in orders, cosine similarity, minimum support).
CREATE TABLE IF NOT EXISTS product_pairs (
    sku        text             NOT NULL,
    other_sku  text             NOT NULL,
    together   integer          NOT NULL,
    score      double precision NOT NULL,
    lift       double precision NOT NULL,
    PRIMARY KEY (sku, other_sku)
) /*gp: DISTRIBUTED BY (sku) */;

-- Orders of each SKU per region ('' = all regions) in the window.
CREATE TABLE IF NOT EXISTS product_popularity (
    region   text    NOT NULL,
    sku      text    NOT NULL,
    orders   integer NOT NULL,
    PRIMARY KEY (region, sku)
) /*gp: DISTRIBUTED BY (sku) */;
