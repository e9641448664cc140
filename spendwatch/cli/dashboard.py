"""Starting the Streamlit dashboard (``app/main.py``) for a config: the door.

- **Exposure**: :func:`check_exposure` refuses, before anything starts, a host other than this
  machine (127.0.0.1, ::1, localhost) without a login, and a login whose Streamlit secrets
  file (``[dashboard] auth_secrets_file``) is not a usable ``[auth]`` section
  (docs/dashboard-login.md). Both raise ConfigError: one line, exit 2.
- **Streamlit hardened on its command line** (:func:`streamlit_command`, served through
  :func:`serve_streamlit`), whatever a ``~/.streamlit/config.toml`` says: XSRF protection
  on, CORS protection on with no extra origin, a WebSocket Host allow-list, no error details
  in the browser, no static serving, no file watching or rerun on save, no agent API, no
  identity taken from request headers, and secrets read from the configured file only
  (never ``~/.streamlit/secrets.toml``).
- **A minimal environment** (:func:`dashboard_env`): PATH, HOME, LANG/LC_*, TZ,
  ``SPENDWATCH_CONFIG`` and ``SPENDWATCH_NOW`` if set. The config names the variables that
  hold the admin key, the SMTP password and the webhook URL; the dashboard never needs their
  values, so it never gets them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import app
from spendwatch.config import LOOPBACK_HOSTS, Config, is_loopback
from spendwatch.errors import ConfigError
from spendwatch.files import check_private

APP_SCRIPT = Path(app.__file__).resolve().parent / "main.py"
#: Passed as Streamlit's only secrets file when there is no login; it never exists, so neither
#: ``~/.streamlit/secrets.toml`` nor ``./.streamlit/secrets.toml`` is read (their top-level
#: values would land in the dashboard's environment).
NO_SECRETS = APP_SCRIPT.parent / "no-secrets-without-login.toml"
ENV_KEPT = ("PATH", "HOME", "LANG", "TZ", "SPENDWATCH_NOW")
AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")
MIN_COOKIE_SECRET = 32
DOCS = "docs/dashboard-login.md"


def check_exposure(config: Config) -> None:
    """Refuse to serve what would be open to others. Raises ConfigError (one line, the fix)."""
    board = config.dashboard
    if not board.on_loopback and not board.login_required:
        raise ConfigError(
            f"{config.path}: dashboard.host = {board.host!r} would serve every figure to the "
            "network with no login; set host = \"127.0.0.1\", or configure a login "
            f"(auth_secrets_file and allowed_emails/allowed_domains in [dashboard], see {DOCS})")
    if board.login_required:
        auth_section(config)
    storage = config.storage
    if (storage.is_lake and not storage.password_file and storage.password_env
            and os.environ.get(storage.password_env)):
        raise ConfigError(
            f"{config.path}: the dashboard gets no secret through its environment, so it "
            f"cannot read the DuckLake catalog's password from ${storage.password_env}; put "
            "the password in a file (chmod 600) and name it in storage.password_file")
    if storage.is_lake and storage.data_path.startswith("s3://") and not (
            storage.s3_key_id_file and storage.s3_secret_file):
        raise ConfigError(
            f"{config.path}: the dashboard gets no secret through its environment, so it "
            "cannot read the object store's keys from it; put them in files (chmod 600) and "
            "name them in storage.s3_key_id_file and storage.s3_secret_file")


def auth_section(config: Config) -> dict[str, object]:
    """The ``[auth]`` table of the dashboard's secrets file, checked (values never shown).

    Raises ConfigError when the file is missing, open to group or others (``chmod 600``), is
    not TOML, holds anything besides ``[auth]``, misses a key ``st.login`` needs, has a short
    ``cookie_secret``, or a ``redirect_uri`` that is not ``.../oauth2callback`` over https
    (http on this machine only).
    """
    file = config.dashboard.auth_secrets_file
    where = f"{config.path}: dashboard.auth_secrets_file {file}"
    if file is None:
        raise ConfigError(f"{config.path}: no login configured; see {DOCS}")
    if not file.endswith(".toml"):
        raise ConfigError(f"{where} must be a .toml file (Streamlit reads secrets from those)")
    check_private(Path(file), f"{config.path}: dashboard.auth_secrets_file")
    try:
        data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; create it with an [auth] section "
                          f"(see {DOCS})") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{where} is not valid TOML; fix it (see {DOCS})") from None
    extra = sorted(set(data) - {"auth"})
    if extra:
        raise ConfigError(f"{where} holds {extra[0]!r} besides [auth]; keep only [auth] in it "
                          "(Streamlit copies top-level values into the environment)")
    auth = data.get("auth")
    if not isinstance(auth, dict):
        raise ConfigError(f"{where} has no [auth] section; add one (see {DOCS})")
    missing = [key for key in AUTH_KEYS if not isinstance(auth.get(key), str) or not auth[key]]
    if missing:
        raise ConfigError(f"{where}: [auth] has no {missing[0]}; add it (see {DOCS})")
    if len(str(auth["cookie_secret"])) < MIN_COOKIE_SECRET:
        raise ConfigError(f"{where}: [auth] cookie_secret is shorter than {MIN_COOKIE_SECRET} "
                          "characters (it signs the login cookie); use the output of "
                          "`python -c \"import secrets; print(secrets.token_hex(32))\"`")
    redirect = urlsplit(str(auth["redirect_uri"]))
    if not redirect.path.endswith("/oauth2callback"):
        raise ConfigError(f"{where}: [auth] redirect_uri must end with /oauth2callback, e.g. "
                          "https://spend.example.com/oauth2callback")
    if redirect.scheme != "https" and not (redirect.scheme == "http"
                                           and is_loopback(redirect.hostname)):
        raise ConfigError(f"{where}: [auth] redirect_uri must use https (http only for "
                          "127.0.0.1/localhost), or the login cookie travels in clear text")
    return auth


def allowed_hosts(config: Config) -> list[str]:
    """Host names the dashboard's WebSocket accepts (DNS rebinding is refused): this machine,
    the configured host unless it is a wildcard, and the login's redirect host."""
    hosts = list(LOOPBACK_HOSTS)
    board = config.dashboard
    if board.host not in ("0.0.0.0", "::", "[::]"):
        hosts.append(board.host.strip("[]"))
    if board.login_required:
        redirect = urlsplit(str(auth_section(config)["redirect_uri"]))
        if redirect.hostname:
            hosts.append(redirect.hostname)
    return list(dict.fromkeys(h.lower() for h in hosts))


def streamlit_command(config: Config) -> list[str]:
    """The command line that serves the dashboard for ``config``, hardened explicitly."""
    board = config.dashboard
    secrets = board.auth_secrets_file or str(NO_SECRETS)
    command = [sys.executable, "-m", "spendwatch.cli.dashboard", "run", str(APP_SCRIPT),
               "--server.address", board.host,
               "--server.port", str(board.port),
               "--server.headless", "true",
               "--server.enableXsrfProtection", "true",
               "--server.enableCORS", "true",
               "--server.enableStaticServing", "false",
               "--server.runOnSave", "false",
               "--server.fileWatcherType", "none",
               "--server.enableAgentApi", "false",
               "--server.trustedUserHeaders", "{}",
               "--server.maxUploadSize", "1",
               "--client.showErrorDetails", "none",
               "--client.toolbarMode", "minimal",
               "--browser.gatherUsageStats", "false",
               "--global.developmentMode", "false",
               "--secrets.files", secrets]
    for host in allowed_hosts(config):
        command += ["--server.allowedHosts", host]
    return command


def dashboard_env(config: Config, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The dashboard's whole environment: PATH, HOME, LANG/LC_*, TZ, ``SPENDWATCH_NOW`` if set,
    and ``SPENDWATCH_CONFIG`` (where its config is). Nothing else: no admin key, no SMTP
    password, no webhook URL, no STREAMLIT_* override."""
    source = os.environ if environ is None else environ
    kept = {k: v for k, v in source.items() if k in ENV_KEPT or k.startswith("LC_")}
    kept.setdefault("PATH", os.defpath)
    return {**kept, "SPENDWATCH_CONFIG": str(config.path.absolute())}


def url(config: Config) -> str:
    host = config.dashboard.host
    return f"http://{f'[{host}]' if ':' in host else host}:{config.dashboard.port}"


def start_dashboard(config: Config) -> subprocess.Popen[bytes]:
    """Serve the dashboard in a child process (the demo runs it beside the worker).
    Raises ConfigError when :func:`check_exposure` refuses."""
    check_exposure(config)
    return subprocess.Popen(streamlit_command(config), env=dashboard_env(config),
                            stdout=subprocess.DEVNULL)


def run_dashboard(config: Config) -> None:
    """Serve the dashboard in this process's place, until stopped.
    Raises ConfigError when :func:`check_exposure` refuses."""
    check_exposure(config)
    command = streamlit_command(config)
    os.execve(command[0], command, dashboard_env(config))


def serve_streamlit() -> None:
    """``python -m spendwatch.cli.dashboard run app/main.py ...``: Streamlit's own command line,
    told first that the app navigates with ``st.navigation`` only.

    ``app/pages/`` would otherwise make Streamlit treat the app as an old-style multipage app
    until some session has run ``main.py``: a first visitor whose URL names a page
    (``/alerts``) would get that page's script run directly, without ``main.py``'s login
    check, and the "Page not found" dialog of a first deep link. ``app.data.config`` checks
    the login too, whatever runs.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web.cli import main

    PagesManager.uses_pages_directory = False  # what st.navigation's first call sets
    main(prog_name="streamlit")


if __name__ == "__main__":
    serve_streamlit()
