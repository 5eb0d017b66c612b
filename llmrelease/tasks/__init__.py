"""The release steps. Each module holds plain functions (tested directly) and, where the step is a
Prefect task, a thin ``@task`` wrapper in ``llmrelease.tasks.prefect_tasks``."""
