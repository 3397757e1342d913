-- demo.customers: what the CSV job loads (segment: from the optional HTTP enrichment).
CREATE TABLE IF NOT EXISTS {table} (
    id         bigint PRIMARY KEY,
    name       text,
    email      text,
    amount     numeric(12,2),
    note       text,
    created_at timestamptz,
    segment    text
)
