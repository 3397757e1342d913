-- The async example's target: each event's user tier, looked up over HTTP.
CREATE TABLE IF NOT EXISTS {table} (
    id      bigint PRIMARY KEY,
    user_id integer,
    tier    text
)
