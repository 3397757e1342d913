"""What the example DAGs use: the demo tables' DDL (sql/), the demo transforms (transforms/) and a
small sample CSV (data/). Import transforms as ``include.transforms.<module>:<function>``: the
project root is on the Python path of Airflow's processes (see ``parallel-batch env`` and the
Dockerfile)."""
