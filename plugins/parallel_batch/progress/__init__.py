"""Progress of parallel_batch jobs for people: ``parallel-batch status`` and the web page.

::

    store read model          model                  terminal   the CLI's tables
    (JobStatus, ChunkState) -> (JobRow, ChunkRow) -> pages      HTML (templates/, static/)
                                                     app        the routes, HTML and JSON

Both views render the same display rows, so they always agree; only the web app reads dead
letters (:mod:`~parallel_batch.progress.deadletters`) in one snapshot
(:mod:`~parallel_batch.progress.reads`), and answers failures with a
:mod:`~parallel_batch.progress.problems` panel.
"""
