"""Airflow operators, plugin and provider info: the only package that imports airflow."""
