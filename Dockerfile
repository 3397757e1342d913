# The official Airflow image with this project installed: the provider package (operators,
# plugin, provider info, the `parallel-batch` CLI) and the example DAGs.
#
#   docker compose build      # see docker-compose.yaml
#
# The base image pins Airflow; installing it again at the same version keeps pip from
# upgrading or downgrading it while it resolves this package's dependencies.
FROM apache/airflow:3.3.2

# Sources of the package only (see .dockerignore): no virtualenv, no local state.
COPY --chown=airflow:root pyproject.toml README.md /opt/parallel-batch/
COPY --chown=airflow:root plugins/parallel_batch /opt/parallel-batch/plugins/parallel_batch

# apache-airflow-providers-celery: the CeleryExecutor of docker-compose.yaml.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "apache-airflow-providers-celery" \
        /opt/parallel-batch

COPY --chown=airflow:root dags /opt/airflow/dags
# What the DAGs use (the demo tables' SQL, transforms, sample data), importable as `include.*`:
# Airflow puts only dags/ and plugins/ on the Python path, so the project root goes there too.
COPY --chown=airflow:root include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow
