CREATE TYPE app.order_status AS ENUM ('new', 'paid');
CREATE DOMAIN app.email AS text CHECK (VALUE ~ '^[^@;]+@[^@;]+$');
