"""Settings: documented defaults, and errors that name the variable and its bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import stack.settings
from archiver.settings import ArchiveSettings
from listener.settings import ListenerSettings
from onboarding.errors import ConfigError
from onboarding.settings import default_home
from risk.settings import RiskSettings
from stack.errors import StackError
from stack.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_environment() -> None:
    settings = ListenerSettings.from_env({})
    assert settings.streams.signups_stream == "signups"
    assert settings.streams.decisions_stream == "decisions"
    assert settings.streams.dead_letter_stream == "signups:dead"
    assert settings.airflow.dag_id == "onboarding"
    assert settings.max_payload_bytes == 64 * 1024


def test_values_are_parsed_once_into_types() -> None:
    settings = ListenerSettings.from_env(
        {"LISTENER_BATCH_SIZE": "32", "AIRFLOW_TIMEOUT_S": "2.5", "SIGNUPS_STREAM": "s2", "AIRFLOW_PASSWORD": "pw"}
    )
    assert settings.batch_size == 32
    assert settings.airflow.timeout_s == 2.5
    assert settings.streams.signups_stream == "s2"
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTENER_BATCH_SIZE": "abc"}, "LISTENER_BATCH_SIZE='abc' is not an integer"),
        ({"LISTENER_BATCH_SIZE": "0"}, "LISTENER_BATCH_SIZE='0' must be at least 1"),
        ({"AIRFLOW_TIMEOUT_S": "soon"}, "AIRFLOW_TIMEOUT_S='soon' is not a number"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' must be json or text"),
        ({"AIRFLOW_PASSWORD_FILE": "/nonexistent/pw"}, "AIRFLOW_PASSWORD_FILE='/nonexistent/pw' cannot be read"),
    ],
)
def test_bad_values_name_the_key_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ListenerSettings.from_env(env)


def test_password_file_is_read(tmp_path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    assert ListenerSettings.from_env({"AIRFLOW_PASSWORD_FILE": str(path)}).airflow.password == "s3cret"


def test_metadata_database_choice() -> None:
    assert StackSettings.from_env({}).database_url is None
    assert StackSettings.from_env({"ONBOARDING_METADATA_DB": "postgres"}).database_url.startswith("postgresql")
    with pytest.raises(ConfigError, match="ONBOARDING_METADATA_DB='mysql'"):
        StackSettings.from_env({"ONBOARDING_METADATA_DB": "mysql"})


def test_each_instance_takes_its_dag_folder_from_the_environment(tmp_path) -> None:
    from stack.local import Stack

    batch = tmp_path / "batch-dags"
    batch.mkdir()
    settings = StackSettings.from_env({"BATCH_DAGS_FOLDER": str(batch), "ONBOARDING_HOME": str(tmp_path / "home")})
    stack = Stack(settings)
    assert stack.batch.spec.dags_folder == batch
    assert stack.realtime.spec.dags_folder.parts[-2:] == ("dags", "realtime")  # the default
    with pytest.raises(ConfigError, match="REALTIME_DAGS_FOLDER='/no/such/folder' is not a directory"):
        StackSettings.from_env({"REALTIME_DAGS_FOLDER": "/no/such/folder"})


def test_risk_settings() -> None:
    settings = RiskSettings.from_env({"RISK_MODEL_DIR": "/models", "RISK_REVIEW_COST": "0.5"})
    assert str(settings.model_dir) == "/models"
    assert settings.review_cost == 0.5


def test_the_data_home_is_onboarding_home_else_var_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = Path.cwd()
    assert default_home({}) == cwd / "var"
    assert default_home({"ONBOARDING_HOME": "/srv/onboarding"}) == Path("/srv/onboarding")
    # Absolute, so that it means the same to a child process started in another directory.
    assert default_home({"ONBOARDING_HOME": "data"}) == cwd / "data"


def test_every_component_keeps_its_data_in_the_one_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    var = Path.cwd() / "var"
    for environ, home in (({}, var), ({"ONBOARDING_HOME": "/srv/onboarding"}, Path("/srv/onboarding"))):
        archive = ArchiveSettings.from_env(environ)
        assert RiskSettings.from_env(environ).model_dir == home / "models"
        assert archive.archive_dir == home / "archive"
        assert archive.instance("realtime").url == f"sqlite:///{home}/realtime/airflow.db"
        assert StackSettings.from_env(environ).home == home
    # Built directly, the defaults are those of an empty environment.
    assert RiskSettings().model_dir == var / "models"
    assert ArchiveSettings().archive_dir == var / "archive"
    assert StackSettings().home == var


def test_the_specific_variables_still_win_over_the_home() -> None:
    environ = {
        "ONBOARDING_HOME": "/srv/onboarding",
        "RISK_MODEL_DIR": "/models",
        "ARCHIVE_DIR": "/archive",
        "ARCHIVE_REALTIME_DB_URL": "postgresql://db/realtime",
    }
    archive = ArchiveSettings.from_env(environ)
    assert RiskSettings.from_env(environ).model_dir == Path("/models")
    assert archive.archive_dir == Path("/archive")
    assert archive.instance("realtime").url == "postgresql://db/realtime"


def test_production_settings_do_not_import_the_local_runner() -> None:
    code = "import sys, archiver.settings, risk.settings; print([m for m in sys.modules if m.split('.')[0] == 'stack'])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_stack_refuses_to_run_without_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.settings, "PROJECT_ROOT", tmp_path / "site-packages")
    with pytest.raises(StackError, match="source checkout"):
        StackSettings.from_env({})


def test_urls_in_messages_hide_their_password() -> None:
    from onboarding.settings import redacted_url

    assert redacted_url("redis://listener:s3cret@redis:6380/0") == "redis://listener:***@redis:6380/0"
    assert redacted_url("rediss://:s3cret@redis/1") == "rediss://:***@redis/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_one_secret_helper_for_every_credential(tmp_path: Path) -> None:
    """`Env.secret`: the variable wins, else the file it names (a mounted Secret), trimmed."""
    from onboarding.airflow import AirflowSettings
    from onboarding.env import Env
    from ops.redis_acl import password_for

    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    assert Env({"X_PASSWORD": "direct", "X_PASSWORD_FILE": str(secret_file)}).secret("X_PASSWORD") == "direct"
    assert Env({"X_PASSWORD_FILE": str(secret_file)}).secret("X_PASSWORD") == "from-file"
    assert Env({}).secret("X_PASSWORD") is None
    admin = AirflowSettings.from_env(
        {"AIRFLOW_ADMIN_PASSWORD_FILE": str(secret_file)}, credentials="AIRFLOW_ADMIN", username="admin"
    )
    assert (admin.username, admin.password) == ("admin", "from-file")
    assert password_for("listener", {"REDIS_ACL_PASSWORD_LISTENER_FILE": str(secret_file)}) == "from-file"


# The realtime instance's adjustments of Airflow (airflow_adapter.versions.ADJUSTMENTS):
# each is switched by a setting docs/configuration.md names, on unless it is false.
ADJUSTMENT_SWITCHES = [
    ("airflow_adapter.schema_checks", "ONBOARDING_MEMOIZE_PARAM_SCHEMAS"),
    ("airflow_adapter.execution_api_warmup", "ONBOARDING_WARM_EXECUTION_API"),
    ("airflow_adapter.action_log_thread", "ONBOARDING_ACTION_LOG_IN_THREAD"),
    ("airflow_adapter.sqlite_now", "ONBOARDING_SQLITE_NOW_MS"),
]


@pytest.mark.parametrize(("module_name", "key"), ADJUSTMENT_SWITCHES)
def test_each_realtime_adjustment_has_a_documented_switch_on_by_default(module_name: str, key: str) -> None:
    import importlib

    from airflow_adapter.versions import ADJUSTMENTS
    from onboarding.env import switch

    module = importlib.import_module(module_name)
    assert module.ENV_VAR == key
    assert f"| `{key}` | `true` |" in (ROOT / "docs" / "configuration.md").read_text()
    # The realtime local settings install every adjustment of this one table.
    assert ADJUSTMENTS[module_name].switch == key
    assert switch(key, {}) is True
    assert switch(key, {key: "false"}) is False
    with pytest.raises(ConfigError, match=f"{key}='maybe'"):
        switch(key, {key: "maybe"})
