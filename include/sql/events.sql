-- demo.events: the table the table job reads (`parallel-batch seed events` fills it).
-- Its primary key and the created_at index are built after the load (events_indexes.sql).
CREATE TABLE {table} (
    id         bigint NOT NULL,
    user_id    integer,
    payload    text,
    amount     numeric(12,2),
    created_at timestamptz
)
