"""A rank that codistill started itself (``python -m codistill.worker <config> <run dir>``,
launched by :func:`codistill.distributed.start`): it runs the same pipeline on the same config.

Its own module so that :mod:`codistill.distributed` (a leaf the pipeline uses) never imports
:mod:`codistill.run` (the pipeline) back.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("codistill.distributed")


def main(config_path: str, run_dir: str) -> int:
    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK')}] %(name)s: %(message)s")
    from omegaconf import OmegaConf

    from codistill.run import run

    cfg = OmegaConf.load(config_path)
    try:
        run(cfg, Path(run_dir))
    except Exception:
        log.exception("rank %s failed", os.environ.get("RANK"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
