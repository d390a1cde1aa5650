CREATE FUNCTION app.bump_revision() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.revision := OLD.revision + 1;  -- every change counts; even this one
    RETURN NEW;
END;
$fn$;

CREATE TRIGGER orders_revision BEFORE UPDATE ON app.orders
    FOR EACH ROW EXECUTE FUNCTION app.bump_revision();

CREATE FUNCTION app.order_count(customer bigint) RETURNS bigint LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*) FROM app.orders WHERE customer_id = customer;
END;

CREATE PROCEDURE app.mark_paid(order_id bigint) LANGUAGE sql
BEGIN ATOMIC
    UPDATE app.orders SET status = 'paid' WHERE id = order_id;
    UPDATE app.orders
       SET note = CASE WHEN note IS NULL THEN 'paid; thanks' ELSE note || '; paid' END
     WHERE id = order_id;
END;

CREATE FUNCTION app.slug(t text) RETURNS text LANGUAGE sql IMMUTABLE
    RETURN lower(regexp_replace(t, '[^a-z0-9]+', '-', 'gi'));
