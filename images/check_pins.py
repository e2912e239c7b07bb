"""Do the stage image's CUDA pieces agree? The base images' CUDA, the torch wheel's CUDA, gsplat's build
architectures, the driver the chart's docs ask for, and the torch pin everywhere it is written.

    python images/check_pins.py [--build-arg KEY=VALUE ...]   (what `make images` passes: STAGE_BUILD_ARGS)
    python images/check_pins.py --verify-pypi                  (also re-read PyPI's torch wheel metadata)

torch's extension builder (torch.utils.cpp_extension) stops when nvcc's major version differs from the
CUDA torch was built with, so gsplat only builds when the devel base's CUDA major is the wheel's. The
wheel's CUDA is not in its version on PyPI (``2.13.0``, no ``+cu130``): images/cuda-pins.json records it
from the wheel's metadata (its ``cuda-toolkit==13.0.3`` requirement), a PyTorch index by its name
(``.../whl/cu128``). Standard library only: it runs before any environment is installed.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "images" / "stage.Dockerfile"
PINS = ROOT / "images" / "cuda-pins.json"
CHART_README = ROOT / "charts" / "spaceport" / "README.md"
CUDA_ENV = ROOT / "operator" / "spaceport" / "stages" / "train" / "cuda_env.py"


def dockerfile_args(path: Path = DOCKERFILE) -> dict[str, str]:
    """Every ``ARG NAME=default`` in the Dockerfile (global and per stage; later ones do not override)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*ARG\s+(\w+)(?:=(.*))?$", line)
        if m:
            args.setdefault(m.group(1), (m.group(2) or "").strip().strip('"'))
    return args


def parse_build_args(argv: list[str]) -> dict[str, str]:
    """``--build-arg K=V`` pairs (as in STAGE_BUILD_ARGS), ``--build-arg=K=V`` too."""
    out: dict[str, str] = {}
    it = iter(argv)
    for word in it:
        if word == "--build-arg":
            word = "--build-arg=" + next(it, "")
        if word.startswith("--build-arg="):
            key, _, value = word.removeprefix("--build-arg=").partition("=")
            out[key] = value
    return out


def torch_pins() -> dict[str, str]:
    """Where torch's version is written: the Dockerfile, pyproject.toml's stages extra, the Makefile."""
    found = {}
    if m := re.search(r"pip install torch==(\S+)", DOCKERFILE.read_text()):
        found["images/stage.Dockerfile"] = m.group(1)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["stages"]
    found["pyproject.toml"] = next((r.split("==")[1] for r in extra if r.startswith("torch==")), "")
    if m := re.search(r"pip install -q torch==(\S+)", (ROOT / "Makefile").read_text()):
        found["Makefile"] = m.group(1)
    return found


def base_cuda(image: str) -> str | None:
    """``nvidia/cuda:13.0.2-devel-ubuntu24.04`` -> ``13.0.2``; None for a base without CUDA."""
    m = re.match(r"(?:[\w.-]+/)?nvidia/cuda:(\d+\.\d+(?:\.\d+)?)-", image)
    return m.group(1) if m else None


def wheel_cuda(index_url: str, pins: dict) -> str | None:
    """The CUDA version of the torch wheel pip takes with ``index_url`` as an extra index (empty: PyPI's);
    None for a CPU build. Raises ValueError for an index whose build cannot be told."""
    if not index_url:
        return pins["wheels"]["pypi"]["cuda"]
    m = re.search(r"/whl/(?:[a-z]+/)?(cpu|cu(\d+)(\d))/?$", index_url)
    if not m:
        raise ValueError(f"TORCH_INDEX_URL={index_url}: not a PyTorch wheel index (…/whl/cu128, …/whl/cpu)")
    return None if m.group(1) == "cpu" else f"{int(m.group(2))}.{m.group(3)}"


def major(version: str) -> int:
    return int(version.split(".")[0])


def driver_minimum() -> dict[int, str]:
    """spaceport.stages.train.cuda_env.DRIVER_MINIMUM, read without importing torch."""
    tree = ast.parse(CUDA_ENV.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DRIVER_MINIMUM":
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    raise LookupError(f"{CUDA_ENV}: no DRIVER_MINIMUM")


def check(overrides: dict[str, str] | None = None, pins: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """Problems (empty: all agree) and a summary, for the Dockerfile's defaults with ``overrides``."""
    pins = pins or json.loads(PINS.read_text())
    args = {**dockerfile_args(), **(overrides or {})}
    problems = [f"{where} pins torch=={version}, images/cuda-pins.json {pins['torch']}"
                for where, version in torch_pins().items() if version != pins["torch"]]
    build, runtime = base_cuda(args["BUILD_BASE"]), base_cuda(args["RUNTIME_BASE"])
    try:
        torch_cuda = wheel_cuda(args.get("TORCH_INDEX_URL", ""), pins)
    except ValueError as e:
        return [*problems, str(e)], {}
    summary = {"build base": args["BUILD_BASE"], "runtime base": args["RUNTIME_BASE"],
               "torch": f"{pins['torch']} ({'CUDA ' + torch_cuda if torch_cuda else 'CPU'} build)"}
    gsplat_cuda = args.get("GSPLAT_BUILD_NO_CUDA", "0") != "1"
    if torch_cuda is None:
        if gsplat_cuda:
            problems.append("a CPU torch with GSPLAT_BUILD_NO_CUDA=0: gsplat's CUDA build needs a CUDA torch")
        return problems, summary
    if build is None and gsplat_cuda:
        problems.append(f"BUILD_BASE={args['BUILD_BASE']} has no nvcc: gsplat's CUDA kernels need a nvidia/cuda "
                        "devel base (or GSPLAT_BUILD_NO_CUDA=1)")
    why = {"BUILD_BASE": "torch's extension builder refuses an nvcc of another major version: gsplat would not build",
           "RUNTIME_BASE": "gsplat's kernels, linked against the build base's CUDA runtime, would not load"}
    for name, cuda in (("BUILD_BASE", build), ("RUNTIME_BASE", runtime)):
        if cuda is not None and major(cuda) != major(torch_cuda):
            problems.append(f"{name}={args[name]} is CUDA {cuda} but torch {pins['torch']} from "
                            f"{args.get('TORCH_INDEX_URL') or 'PyPI'} is a CUDA {torch_cuda} build: {why[name]}")
    arch_list = args.get("TORCH_CUDA_ARCH_LIST", "")
    archs = [a.removesuffix("+PTX") for a in re.split(r"[;\s]+", arch_list) if a]
    if not arch_list.endswith("+PTX"):
        problems.append(f"TORCH_CUDA_ARCH_LIST={arch_list!r} has no +PTX on its newest architecture: GPUs "
                        "newer than the list would get 'no kernel image is available'")
    lowest = pins["archMinimum"].get(str(major(torch_cuda)))
    too_old = [a for a in archs if lowest and tuple(map(int, a.split("."))) < tuple(map(int, lowest.split(".")))]
    if too_old:
        problems.append(f"TORCH_CUDA_ARCH_LIST has {', '.join(too_old)}, which CUDA {major(torch_cuda)} no longer "
                        f"builds for (its oldest is {lowest})")
    driver = driver_minimum().get(major(torch_cuda))
    summary["driver"] = f">= {driver}"
    if driver is None:
        problems.append(f"cuda_env.DRIVER_MINIMUM has no driver for CUDA {major(torch_cuda)}")
    elif not overrides and f"{driver}" not in CHART_README.read_text():
        problems.append(f"charts/spaceport/README.md does not state the driver the default image needs ({driver})")
    return problems, summary


def pypi_wheel_cuda(version: str, python: str) -> str:
    """Ask pip (PyPI) for torch==version's Linux wheel and read the CUDA its metadata requires."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--no-deps", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version",
                        python, "--target", str(Path(tmp) / "t"), "--report", str(report), f"torch=={version}"],
                       check=True)
        requires = json.loads(report.read_text())["install"][0]["metadata"].get("requires_dist", [])
    return cuda_of_requirements(requires)


def cuda_of_requirements(requires: list[str]) -> str:
    """``13.0`` from a torch wheel's Requires-Dist (``cuda-toolkit[...]==13.0.3``, or older wheels'
    ``nvidia-cuda-runtime-cu12==12.8.90``)."""
    for req in requires:
        if m := re.match(r"(?:cuda-toolkit|nvidia-cuda-runtime(?:-cu\d+)?)\b[^=]*==(\d+)\.(\d+)", req):
            return f"{m.group(1)}.{m.group(2)}"
    raise LookupError(f"the wheel requires no CUDA runtime: {requires}")


def main(argv: list[str]) -> int:
    problems, summary = check(parse_build_args(argv))
    if "--verify-pypi" in argv:
        pins = json.loads(PINS.read_text())
        found = pypi_wheel_cuda(pins["torch"], pins["python"])
        summary["PyPI wheel"] = f"CUDA {found}"
        if found != pins["wheels"]["pypi"]["cuda"]:
            problems.append(f"PyPI's torch=={pins['torch']} wheel is now a CUDA {found} build; images/cuda-pins.json "
                            f"says {pins['wheels']['pypi']['cuda']}")
    for key, value in summary.items():
        print(f"{key:>13}: {value}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
