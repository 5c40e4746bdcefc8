"""Run the static checkers so they cannot reach any network."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """`unshare --net` when this machine allows it: the command then has no network at all."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, check=False)
    return (unshare, "--net") if probe.returncode == 0 else ()


def run_offline(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a checker with its downloads and update checks switched off, in no network."""
    env = {
        **os.environ,
        # checkov: no Prisma Cloud guidelines download, no PyPI update check.
        "BC_SKIP_MAPPING": "TRUE",
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "True",
        # Anything that still tries goes to a closed loopback port.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    return subprocess.run(
        [*_unshare_prefix(), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
