ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_own ON app.orders
    USING (customer_id = current_setting('app.customer', true)::bigint);

/* A block comment /* nested; */ with semicolons; still one comment */
COMMENT ON COLUMN app.orders.note IS $c$Free text; "quotes" and 'apostrophes' welcome$c$;
COMMENT ON FUNCTION app.slug(text) IS 'lower-case; dashes';
