-- Built without blocking writes, so this migration runs outside a transaction.
CREATE INDEX CONCURRENTLY orders_customer ON app.orders (customer_id);
CREATE UNIQUE INDEX CONCURRENTLY customers_lower_email ON app.customers (lower(email));
