INSERT INTO app.customers (email, name, created_at) VALUES
    ('ada@example.com', E'Ada \'the first\'; Lovelace', '2024-01-02 10:00+00'),
    ('bob@example.com', $$Bob; "the builder"$$, '2024-01-03 11:00+00'),
    ('cy@example.com', 'Cy -- not a comment', '2024-01-03 12:00+00');

INSERT INTO app.orders (customer_id, total, note)
SELECT id, 10.50 * id, '/* not a comment either */' FROM app.customers ORDER BY id;
