import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "codistill" / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def compose():
    """Compose the real config tree with overrides (no Hydra run)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from codistill.config import register_configs

    register_configs()

    def _c(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return _compose("config", overrides=list(overrides))

    return _c


def run_cli(args, cwd, env=None, timeout=600):
    """Run the real console entry point as a user would."""
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "codistill", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


class LoopbackServer:
    """An HTTP server on a free 127.0.0.1 port in a daemon thread: ``start(Handler)`` serves
    ``self.url`` (``.../v1``, an OpenAI-compatible base URL), ``close()`` stops it."""

    def start(self, handler) -> None:
        import http.server
        import threading

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
