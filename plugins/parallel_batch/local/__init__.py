"""The local runtime of the command line and the ``make`` targets; the library never imports it.

::

    config       which database: PARALLEL_BATCH_DATABASE_URL, else the embedded server
    embedded     the embedded PostgreSQL under .parallel_batch/pgdata
    paths        where local state lives (.parallel_batch/)
    conninfo     one server as libpq, SQLAlchemy and Airflow connection JSON spell it
    env          the Airflow environment (`parallel-batch env`) and prepare_airflow
    metadata_db  what the metadata and data databases hold, read with psycopg
    services     LocalAirflow: Airflow's services as supervised child processes
    serve        `parallel-batch airflow` in the foreground until Ctrl-C
    topology     the Celery services' commands and environment, as docker-compose.yaml has them
    cluster      LocalCluster: those services and named Celery workers (`make cluster`)
    demo_data    the small demo data `parallel-batch airflow` creates where it is missing
"""
