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

# apache-airflow-providers-celery: the CeleryExecutor of docker-compose.yaml. Celery 5.7 dropped
# a function the provider still imports (the workers would not start): below 5.7, as pyproject.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "apache-airflow-providers-celery" \
        "celery[redis]>=5.5,<5.7" \
        /opt/parallel-batch

# The layout the official image expects: DAGs in /opt/airflow/dags, plugins in
# /opt/airflow/plugins (the package's sources; its .airflowignore keeps Airflow from importing
# the modules as plugins: the plugin loads once, through the installed package's entry point).
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
# What the DAGs use (the demo tables' SQL, transforms, sample data), importable as `include.*`:
# Airflow puts only dags/ and plugins/ on the Python path of its own processes, so the project
# root goes on PYTHONPATH, and plugins/ too for every other python (airflow-init, the CLI), so
# that a mounted ./plugins is the code that runs everywhere.
COPY --chown=airflow:root include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow:/opt/airflow/plugins
# The shared data volume of docker-compose.yaml mounts here; a new volume takes this owner.
RUN mkdir -p /opt/airflow/data
