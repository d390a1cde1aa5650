CREATE VIEW app.customer_totals AS
    SELECT c.id, c.name, coalesce(sum(o.total), 0) AS total
      FROM app.customers c
      LEFT JOIN app.orders o ON o.customer_id = c.id
     GROUP BY c.id, c.name;

CREATE MATERIALIZED VIEW app.daily_signups AS
    SELECT date_trunc('day', created_at AT TIME ZONE 'UTC') AS day, count(*) AS n
      FROM app.customers
     GROUP BY 1
WITH DATA;
