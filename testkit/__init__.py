"""Real-component fixtures shared by the tests and the benchmarks: a real Airflow instance
started and stopped around a test or a benchmark, realistic archive rows, a baseline model,
free ports, PostgreSQL copies and the Celery stack.

Plain functions and context managers; the pytest fixtures that wrap them live in the
tests' conftest files. Not shipped: testkit is not in the wheel (it is not listed in
[tool.setuptools.packages.find]) and runs from a checkout only, where pytest and the
benchmarks put the checkout root on sys.path. It sits at the top of the layers, beside
the benchmarks: it may import any package of the project, and nothing that ships imports it.

- `testkit.services`: `require()` a real service (a loud failure in CI), `free_port()`
- `testkit.postgres`: `postgres_available()`, `postgres_copy()` of a template database
- `testkit.model`: `train_baseline()`, the service's model with the default policy
- `testkit.realtime`: `running_realtime()`, a realtime Airflow with its own streams and
  listeners (`RealtimeStack`)
- `testkit.celery_stack`: `celery_realtime()`, the realtime instance on CeleryExecutor with
  its workers
- `testkit.seed`: `seed_runs()`, `seed_jobs()`, onboarding runs in a metadata database
- `testkit.netns`: `network()`, hosts in Linux network namespaces with cut/heal of one link
  (`Network`), `sweep_leftovers()`
- `testkit.faults`: the fault matrix's cells and measurements (benchmarks/faults.py)
"""
