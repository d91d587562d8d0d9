"""The suite's warning filters: detflow's own warnings are errors; other packages' are not.

``filterwarnings = error`` for everything turned any installed pytest plugin's
deprecation warning (pytest-asyncio's, at configure time) into a crash of every run.
The filters in ``pyproject.toml`` make warnings raised from ``detflow`` (and from the
tests) errors, and leave other packages' warnings to pytest's summary. Checked here by
running pytest with the project's configuration on a plugin that warns as such plugins
do, at import and while pytest configures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
import warnings

warnings.warn("warny_plugin is deprecated (at import)", DeprecationWarning, stacklevel=1)


def pytest_configure(config):
    # what pytest-asyncio does about an unset option
    config.issue_config_time_warning(DeprecationWarning("warny_plugin: an option is unset"), stacklevel=2)
'''

TESTS = '''
import warnings


def _warn_from(module: str, category: type[Warning]) -> None:
    """Warn as code in ``module`` would (the filters look at the module that warns)."""
    exec("import warnings; warnings.warn('from ' + __name__, category)", {"__name__": module, "category": category})


def test_another_package_may_warn() -> None:
    _warn_from("somelib.core", DeprecationWarning)


def test_detflow_may_not() -> None:
    _warn_from("detflow.sources.fake", UserWarning)
'''


def test_a_plugin_that_warns_does_not_stop_the_suite_and_detflow_warnings_still_fail(tmp_path) -> None:
    (tmp_path / "warny_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "test_warned.py").write_text(textwrap.dedent(TESTS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "warny_plugin", "-p", "no:cacheprovider", "-q", str(tmp_path / "test_warned.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    out = proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in out, out
    assert "test_detflow_may_not" in out and "UserWarning: from detflow.sources.fake" in out, out
    assert "warny_plugin: an option is unset" in out, out  # reported, not raised
