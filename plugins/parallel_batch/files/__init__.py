"""CSV chunk planner and reader. No Airflow imports."""
