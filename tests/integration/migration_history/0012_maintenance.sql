VACUUM (ANALYZE) app.orders;
ANALYZE app.customers
