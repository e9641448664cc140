"""Starting the Streamlit dashboard (``app/main.py``) for a config.

The dashboard reads the config from ``$SPENDWATCH_CONFIG``, listens on the configured host and
port (127.0.0.1 by default), and never shows tracebacks or exception text in the browser.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import app
from spendwatch.config import Config

APP_SCRIPT = Path(app.__file__).resolve().parent / "main.py"


def streamlit_command(config: Config) -> list[str]:
    """The command line that serves the dashboard for ``config``."""
    return [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
            "--server.address", config.dashboard.host,
            "--server.port", str(config.dashboard.port),
            "--server.headless", "true",
            "--client.showErrorDetails", "none",
            "--client.toolbarMode", "minimal",
            "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false"]


def dashboard_env(config: Config) -> dict[str, str]:
    """The environment the dashboard runs in: ours, plus where its config is."""
    return {**os.environ, "SPENDWATCH_CONFIG": str(config.path)}


def url(config: Config) -> str:
    return f"http://{config.dashboard.host}:{config.dashboard.port}"


def start_dashboard(config: Config) -> subprocess.Popen[bytes]:
    """Serve the dashboard in a child process (the demo runs it beside the worker)."""
    return subprocess.Popen(streamlit_command(config), env=dashboard_env(config),
                            stdout=subprocess.DEVNULL)


def run_dashboard(config: Config) -> None:
    """Serve the dashboard in this process's place, until stopped."""
    command = streamlit_command(config)
    os.execve(command[0], command, dashboard_env(config))
