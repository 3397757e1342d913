-- After the load: faster than maintaining the indexes row by row. created_at is every scheduled
-- run's filter (its data interval).
ALTER TABLE {table} ADD PRIMARY KEY (id);
CREATE INDEX ON {table} (created_at)
