INSERT INTO app.customers (email, name, created_at)
VALUES ('dee@example.com', 'Dee', '2024-01-04 09:00+00');
REFRESH MATERIALIZED VIEW app.daily_signups;
