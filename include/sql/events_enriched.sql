-- demo.events_enriched: what the table job writes (payload_sha256 = hex SHA-256 of the payload,
-- amount_cents = amount x 100).
CREATE TABLE IF NOT EXISTS {table} (
    id             bigint PRIMARY KEY,
    user_id        integer,
    payload_sha256 text,
    amount_cents   bigint,
    created_at     timestamptz
)
