"""pure Python engine: no Airflow, no database imports."""
