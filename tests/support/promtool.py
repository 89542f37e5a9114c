"""promtool for tests: find the binary, lint Prometheus exposition text.

promtool is installed by scripts/install-tools.sh (`go install`). A test that
needs it fails, rather than skips, when it is missing: a skipped check would
let a broken rule file or exposition land unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = (
    "install it with `go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0` "
    "(scripts/install-tools.sh does), put it on PATH, or point PROMTOOL_BIN at it"
)

# Exit codes of `promtool check metrics`: 1 when the text does not parse,
# 3 when it parses but promlint reports style problems (missing HELP, a
# counter without `_total`, ...).
_LINT_PROBLEMS_EXIT = 3


def promtool_path() -> str:
    """Path of the promtool binary: $PROMTOOL_BIN, else PATH, else the Go bin dir.

    Fails the calling test with a clear message when none is found.
    """
    configured = os.environ.get("PROMTOOL_BIN")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            pytest.fail(f"PROMTOOL_BIN={configured} is not an executable file", pytrace=False)
        return configured
    found = shutil.which("promtool")
    if found:
        return found
    go_bins = [Path(os.environ["GOBIN"])] if os.environ.get("GOBIN") else []
    go_bins += [Path(p) / "bin" for p in os.environ.get("GOPATH", "").split(os.pathsep) if p]
    go_bins.append(Path.home() / "go" / "bin")
    for directory in go_bins:
        candidate = directory / "promtool"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"promtool not found: {INSTALL_HINT}", pytrace=False)


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; output is captured as text, the exit code is not checked."""
    return subprocess.run(
        [promtool_path(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_metrics_text(text: str, *, strict: bool = False) -> list[str]:
    """Lint Prometheus text exposition (format 0.0.4) with `promtool check metrics`.

    Raises AssertionError, with promtool's whole output, when the text does not
    parse; with ``strict`` also when promlint reports style problems. Returns
    those lint warnings (``metric problem`` lines) otherwise, so a caller may
    report or assert on them. OpenMetrics text is not accepted: scrape with the
    default Accept header.
    """
    result = run_promtool("check", "metrics", stdin=text)
    output = "\n".join(part for part in (result.stdout.strip(), result.stderr.strip()) if part)
    if result.returncode == 0:
        return []
    if result.returncode == _LINT_PROBLEMS_EXIT:
        warnings = [line for line in result.stderr.splitlines() if line.strip()]
        if strict:
            raise AssertionError("promtool check metrics reported lint problems:\n" + output)
        return warnings
    raise AssertionError(
        f"promtool check metrics failed (exit {result.returncode}):\n{output or '(no output)'}"
    )
