"""Builds an offline wheel kit: one folder with the wheels this project needs beyond what a target machine's image
already has, installed there with `pip install --no-index --find-links KIT ...` (a Kaggle notebook has no internet).

    make offline-kit                       # for Kaggle's GPU image (the Makefile says why these values)
    python tools/offline_kit.py --out runs/offline-kit --python_version 3.12 --platform manylinux_2_35_x86_64 \\
        --image tools/kaggle-gpu-image.txt [--dry_run]

What goes in: the packages `make setup` installs (requirements.txt, and requirements-unsloth.txt without their
dependencies), with the dependencies their metadata names for the target Python, at the versions installed in this
environment (the tested ones), except
- the test tools (--skip), and
- what the image already has (--image: its `pip freeze`) at a version that every package of the kit accepts; for
  the libraries of --exact, only at exactly the version installed here.
The kit holds the wheels, requirements.txt (installed with its dependencies checked against the image),
requirements-unsloth.txt (installed with --no-deps, as `make setup` does) and INSTALL.txt, the one-line command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from arena.io import write_text  # noqa: E402

# the libraries unsloth patches: the versions tested here, never the image's own unless identical
EXACT = ["transformers", "trl", "datasets", "accelerate", "peft", "bitsandbytes", "tokenizers", "safetensors",
         "huggingface_hub"]
INSTALL = ('pip install --no-index --no-compile --find-links "$KIT" -r "$KIT/requirements.txt" && '
           'pip install --no-index --no-compile --find-links "$KIT" --no-deps -r "$KIT/requirements-unsloth.txt"')


def read_pins(path: str) -> list[str]:
    """The package names of a requirements file (one `name==version` or `name` a line; comments ignored)."""
    with open(path, encoding="utf-8") as f:
        lines = (line.split("#")[0].strip() for line in f)
        return [canonicalize_name(Requirement(line).name) for line in lines if line]


def read_image(path: str | None) -> dict[str, Version]:
    """`pip freeze` output: name -> version (lines that are not `name==version` are ignored)."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        pins = (re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.split("#")[0].strip()) for line in f)
        return {canonicalize_name(m[1]): Version(m[2]) for m in pins if m}


def requirements_of(dist, extras: frozenset, environment: dict) -> list[Requirement]:
    """The requirements a distribution's metadata names for the target environment, with the given extras."""
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**environment, "extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def plan(top: list[str], no_deps: list[str], skip: set[str], exact: set[str], image: dict[str, Version],
         installed: dict, environment: dict) -> dict[str, str]:
    """name -> version of every package the kit must hold. Starts with everything reachable from `top` in the kit,
    then leaves to the image what it has at an accepted version, until nothing changes (each round only removes
    requirements, so it ends)."""
    in_kit = None
    while True:
        needed, specifiers, queue = set(), {}, [(name, frozenset()) for name in top + no_deps if name not in skip]
        while queue:
            name, extras = queue.pop()
            if (name, extras) in needed:
                continue
            needed.add((name, extras))
            if name in no_deps or (in_kit is not None and name not in in_kit):
                continue  # installed --no-deps, or left to the image (whose packages bring their own)
            if name not in installed:
                if name in image:
                    continue
                sys.exit(f"error: {name} is required but not installed here; run `make setup` first")
            for req in requirements_of(installed[name], extras, environment):
                dep = canonicalize_name(req.name)
                specifiers.setdefault(dep, []).append(req.specifier)
                queue.append((dep, frozenset(req.extras)))
        names = {name for name, _ in needed}
        kit = {}
        for name in names:
            have = image.get(name)
            if have is None or (have != Version(installed[name].version) if name in exact else
                                not all(s.contains(have, prereleases=True) for s in specifiers.get(name, []))):
                kit[name] = installed[name].version
        if in_kit == set(kit):
            return kit
        in_kit = set(kit)


def platform_tags(platform: str) -> list[str]:
    """pip takes a manylinux_2_Y tag literally: list it with every older glibc it implies, down to manylinux2014."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not m:
        return [platform]
    newest, arch = int(m[1]), m[2]
    return [f"manylinux_2_{y}_{arch}" for y in range(newest, 16, -1)] + [f"manylinux2014_{arch}", f"manylinux1_{arch}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="The kit folder (wheels are added to it).")
    parser.add_argument("--python_version", required=True, help="The target's Python, e.g. 3.12.")
    parser.add_argument("--platform", required=True,
                        help="The target's wheel platform tag (manylinux_2_35_x86_64), or 'native': this machine's.")
    parser.add_argument("--image", help="The target image's `pip freeze` (packages it already has).")
    parser.add_argument("--skip", nargs="*", default=["pytest", "hypothesis", "nbclient", "nbformat", "ipykernel"],
                        help="Not needed there (tests; a Kaggle notebook has its own Jupyter).")
    parser.add_argument("--exact", nargs="*", default=EXACT, help="Taken from the image only at the version here.")
    parser.add_argument("--dry_run", action="store_true", help="Print what the kit would hold; download nothing.")
    args = parser.parse_args()

    environment = default_environment()  # this machine's (Linux x86-64, as the target) with the target's Python
    environment.update(python_version=args.python_version, python_full_version=f"{args.python_version}.0")
    installed = {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    no_deps = read_pins(os.path.join(ROOT, "requirements-unsloth.txt"))
    image = read_image(args.image)
    kit = plan(read_pins(os.path.join(ROOT, "requirements.txt")), no_deps, set(map(canonicalize_name, args.skip)),
               set(map(canonicalize_name, args.exact)), image, installed, environment)

    target = [] if args.platform == "native" else [
        "--python-version", args.python_version, "--implementation", "cp",
        *(flag for tag in platform_tags(args.platform) for flag in ("--platform", tag))]
    pins = [f"{name}=={version}" for name, version in sorted(kit.items())]
    if args.dry_run:
        for name, version in sorted(kit.items()):
            print(f"{name}=={version}" + (f"  (the image has {image[name]})" if name in image else ""))
        return
    os.makedirs(args.out, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", args.out, *target, *pins], check=True)
    with_deps = [p for p in pins if canonicalize_name(p.split("==")[0]) not in no_deps]
    write_text(os.path.join(args.out, "requirements.txt"), "\n".join(with_deps) + "\n")
    write_text(os.path.join(args.out, "requirements-unsloth.txt"), "\n".join(sorted(set(pins) - set(with_deps))) + "\n")
    write_text(os.path.join(args.out, "INSTALL.txt"),
               f"# Python {args.python_version}, {args.platform}; KIT is this folder\nKIT=.; {INSTALL}\n")
    print(f"{args.out}: {len(pins)} wheels for Python {args.python_version} ({args.platform}); install with\n"
          f"  KIT={args.out}; {INSTALL}")


if __name__ == "__main__":
    main()
