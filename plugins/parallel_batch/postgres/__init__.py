"""psycopg 3 data plane. No Airflow imports."""
