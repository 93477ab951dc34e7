"""Freeze the base image's PyTorch stack while the course is installed on top.

    python base_constraints.py > constraints.txt      # before pip install
    python base_constraints.py --check constraints.txt  # after: fail if it moved

The constraints name torch, torchvision, torchaudio, triton and every
``nvidia-*`` CUDA library that the base image ships, at their installed
versions. Passed to pip with ``-c``, they make pip keep the image's CUDA build
of torch, or stop with a resolver error naming the package that wanted
another one; it never swaps in a multi-gigabyte wheel built for another CUDA.
"""

import sys
from importlib import metadata

PINNED = {"torch", "torchvision", "torchaudio", "triton"}


def _normalise(name):
    return name.lower().replace("_", "-").replace(".", "-")


def base_packages():
    """{normalised name: version} of the packages to hold still."""
    found = {}
    for dist in metadata.distributions():
        name = _normalise(dist.metadata["Name"] or "")
        if name in PINNED or name.startswith("nvidia-"):
            found[name] = dist.version
    if "torch" not in found:
        raise SystemExit("base_constraints: torch is not installed in this image; is the base image a PyTorch one?")
    return found


def render(packages):
    return "".join(f"{name}=={version}\n" for name, version in sorted(packages.items()))


def check(path):
    """Exit non-zero, naming the packages, if any pinned version changed."""
    expected = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, version = line.partition("==")
                expected[name] = version
    now = base_packages()
    moved = [
        f"{name} {version} -> {now.get(name, 'removed')}"
        for name, version in expected.items()
        if now.get(name) != version
    ]
    if moved:
        raise SystemExit("base_constraints: the install changed the base image's PyTorch stack: " + "; ".join(moved))
    print(f"base_constraints: {len(expected)} base packages unchanged (torch {now['torch']})")


def main(argv):
    if len(argv) == 2 and argv[0] == "--check":
        check(argv[1])
    elif not argv:
        sys.stdout.write(render(base_packages()))
    else:
        raise SystemExit("usage: base_constraints.py [--check CONSTRAINTS_FILE]")


if __name__ == "__main__":
    main(sys.argv[1:])
