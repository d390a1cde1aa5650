CREATE TABLE app.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email app.email NOT NULL UNIQUE,
    name text NOT NULL DEFAULT '',  -- empty; until someone says
    created_at timestamptz NOT NULL
);

CREATE TABLE app.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES app.customers (id),
    status app.order_status NOT NULL DEFAULT 'new',
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    note text,
    revision integer NOT NULL DEFAULT 0
);
