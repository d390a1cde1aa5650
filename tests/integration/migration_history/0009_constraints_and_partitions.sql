ALTER TABLE app.orders ADD CONSTRAINT note_short CHECK (length(note) < 200) NOT VALID;
ALTER TABLE app.orders VALIDATE CONSTRAINT note_short;
ALTER TYPE app.order_status ADD VALUE 'refunded';

CREATE TABLE "audit;log".events (
    id bigint NOT NULL,
    happened_on date NOT NULL,
    "what; exactly" text NOT NULL
) PARTITION BY RANGE (happened_on);
CREATE TABLE "audit;log".events_2024 PARTITION OF "audit;log".events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO "audit;log".events VALUES (1, '2024-03-01', 'created; the first'), (2, '2024-03-02', E'tab\there');
