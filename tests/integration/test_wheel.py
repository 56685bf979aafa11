"""bertops as a user installs it: from its wheel, with no checkout. A packaging or serving machine
finds the endpoint's code (serving/, installed as `bertops_serving`) inside the installed package
and lays out a service folder from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

# Run inside the installed copy, from a folder that is not the checkout.
PROBE = """
import json, sys, tempfile
from pathlib import Path
import bertops
from bertops.packaging import lay_out_service, service_source
from bertops.tasks import get_task

folder = Path(tempfile.mkdtemp())
names = lay_out_service(get_task("classification"), {"task": "classification"}, folder)
print(json.dumps({"bertops": bertops.__file__, "source": str(service_source()),
                  "names": names, "present": sorted(p.name for p in folder.iterdir())}))
"""


def test_the_wheel_carries_the_service_code_and_an_installed_bertops_lays_out_a_service(tmp_path):
    source = tmp_path / "src"  # built from a copy: the build writes nothing into the checkout
    source.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / item, source / item)
    for folder in ("bertops", "flows", "serving"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "bertops_*"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("bertops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("service.py", "engine.py", "bentofile.yaml"):
        assert f"bertops_serving/{name}" in names, sorted(n for n in names if not n.startswith("bertops/"))
    assert "bertops/migrations/script.py.mako" in names and "bertops_flows/pipeline.py" in names

    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, timeout=300)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["bertops"]).is_relative_to(target)  # the installed copy, not the checkout
    assert Path(found["source"]) == target / "bertops_serving"
    expected = {"service.py", "engine.py", "bertops_encoding.py", "bertops_window.py", "bertops_serving.json"}
    assert expected <= set(found["present"]) and set(found["names"]) == set(found["present"])
