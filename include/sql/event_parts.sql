-- The rows example's target: an event's amount in parts of at most 1000.00 (a fan-out).
CREATE TABLE IF NOT EXISTS {table} (
    event_id     bigint NOT NULL,
    part         integer NOT NULL,
    amount_cents bigint NOT NULL,
    PRIMARY KEY (event_id, part)
)
