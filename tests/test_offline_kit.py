"""The offline wheel kit (tools/offline_kit.py, `make offline-kit`): what it chooses, and a kit built for this
machine's Python that installs with `pip install --no-index` into a fresh environment where `import unsloth, trl`
then works.

The local stand-in for Kaggle's image is a fresh virtual environment with only torch (the version requirements.txt
pins) installed first: on the development and CI machines pip takes it from a local wheel, elsewhere from pip's cache
of `make setup`. Everything else must come from the kit, with pip's configuration and index switched off."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT, check, run_script
from tools.offline_kit import plan


def dist(version, *requires):
    return SimpleNamespace(version=version, requires=list(requires))


def test_plan_leaves_to_the_image_what_it_has_at_an_accepted_version():
    installed = {
        "trl": dist("1.15.0", "transformers>=4.56", "accelerate"),
        "transformers": dist("5.17.0", "numpy>=1.17", "tokenizers>=0.23.1"),
        "tokenizers": dist("0.23.3"),
        "accelerate": dist("1.15.0", "torch>=2.0", "numpy"),
        "numpy": dist("2.4.6"),
        "torch": dist("2.13.0", "sympy>=1.13.3"),
        "sympy": dist("1.14.0"),
        "unsloth": dist("2026.10.9", "torchvision", "xformers"),  # installed --no-deps: never followed
        "pytest": dist("9.2.0", "pluggy"),
    }
    image = {"numpy": Version("2.0.2"), "torch": Version("2.11.0+cu128"), "sympy": Version("1.12"),
             "tokenizers": Version("0.22.2"), "accelerate": Version("1.15.0"), "transformers": Version("5.9.0")}
    kit = plan(["trl", "numpy", "torch", "pytest"], ["unsloth"], {"pytest"}, {"transformers", "accelerate"}, image,
               installed, {"python_version": "3.12"})
    # numpy and torch: the image's are accepted; sympy is torch's business (torch 2.13's >=1.13.3 does not apply
    # to the image's torch); accelerate: exact, and the image has this very version; transformers: exact, so not
    # 5.9; tokenizers: 0.22.2 does not meet transformers 5.17's >=0.23.1
    assert kit == {"trl": "1.15.0", "transformers": "5.17.0", "tokenizers": "0.23.3", "unsloth": "2026.10.9"}


def pinned(name):
    with open(ROOT / "requirements.txt", encoding="utf-8") as f:
        return next(line.strip() for line in f if re.match(rf"{name}==", line))


@pytest.mark.kit  # downloads about 490 MB: `make test-kit`, which CI also runs
def test_a_kit_for_this_python_installs_offline_into_a_fresh_environment(tmp_path):
    image = tmp_path / "image"
    check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", image], capture_output=True, text=True))
    python = str(image / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]  # this pip, managing the fresh environment
    check(subprocess.run([*pip, "install", "-q", "--no-compile", pinned("torch")], capture_output=True, text=True,
                         timeout=900))
    freeze = tmp_path / "image.txt"
    freeze.write_text(check(subprocess.run([*pip, "freeze", "--all"], capture_output=True, text=True)).stdout)

    kit = tmp_path / "kit"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    check(run_script("tools/offline_kit.py", "--out", kit, "--python_version", version, "--platform", "native",
                     "--image", freeze, timeout=900))
    wheels = {canonicalize_name(w.name.split("-")[0]) for w in kit.glob("*.whl")}
    assert {"unsloth", "unsloth-zoo", "trl", "transformers", "bitsandbytes"} <= wheels
    assert "torch" not in wheels and "pytest" not in wheels  # the image's own; a test tool

    # the kit's own command, with `pip` this pip for the fresh environment, and no index: pip's configuration and
    # PIP_* settings switched off
    command = (kit / "INSTALL.txt").read_text().splitlines()[-1].replace("KIT=.;", f"KIT={kit};")
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    offline["PIP_CONFIG_FILE"] = os.devnull
    check(subprocess.run(["bash", "-c", f'pip() {{ {" ".join(pip)} "$@"; }}; {command}'], capture_output=True,
                         text=True, env=offline, timeout=900))
    result = check(subprocess.run(
        [python, "-c", "import unsloth, trl; import infer; print(trl.__version__, unsloth.__version__)"],
        cwd=ROOT, capture_output=True, text=True, timeout=600))
    assert result.stdout.split()[-2:] == ["1.15.0", "2026.10.9"]
