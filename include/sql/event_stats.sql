-- The dataframe example's target: figures computed a column at a time.
CREATE TABLE IF NOT EXISTS {table} (
    id             bigint PRIMARY KEY,
    user_bucket    integer,
    payload_length integer,
    amount_cents   bigint,
    big            boolean
)
