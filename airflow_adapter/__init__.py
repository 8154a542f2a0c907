"""Everything that faces Airflow, in one package, so an Airflow upgrade is a change here:

    versions.py              the one version check: the Airflow releases each adjustment was
                             proven on; an adjustment refuses to install on any other
    local_settings.py        what the realtime instance's local settings do
                             (deploy/realtime/airflow_local_settings.py only calls it)
    schema_checks.py         adjustment: Param schemas checked against the metaschema once
    execution_api_warmup.py  adjustment: the execution API built when a worker starts
    action_log_thread.py     adjustment: the audit-log commit off the event loop
    sqlite_now.py            adjustment: `now()` on SQLite to the millisecond
    import_hooks.py          run an adjustment right after Airflow imports its module
    auth_manager.py          the realtime instance's FAB auth manager (airflow.cfg names it)
    tasks.py                 the onboarding DAG's task body and callbacks
    maintenance.py           the batch risk DAGs' task bodies

Below it, `risk` and `onboarding` import no Airflow (an import-linter contract).
Modules are imported by name (`from airflow_adapter import tasks`); importing the package
imports none of them, so the local settings load only what they use.
"""
