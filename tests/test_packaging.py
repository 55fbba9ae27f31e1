"""Package data: the default suites and configs ship inside the package and are found with importlib.resources
(never relative to a source file or the working directory); suites may be fsspec URLs; the repository's
configs/ folder is a byte-identical copy of the packaged files."""
from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from influencegate import resources
from influencegate.data import storage
from influencegate.integrations.great_expectations import DEFAULT_SUITE, load_suite
from influencegate.pipelines import load_config, preflight

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_resource_is_package_data() -> None:
    packaged = files("influencegate.resources")
    for name in resources.NAMES:
        assert packaged.joinpath(*name.split("/")).is_file(), name
        assert resources.path(name) == resources.folder().joinpath(name)
    assert DEFAULT_SUITE == resources.path(resources.DEFAULT_SUITE)
    with pytest.raises(FileNotFoundError, match="ships no resource"):
        resources.path("expectations/missing.json")


def test_packaged_suites_and_configs_parse() -> None:
    default, pairs = load_suite(), load_suite(resources.path(resources.PAIRS_SUITE))
    assert default["tables"]["summary"] and pairs["tables"]["summary"]
    assert default["meta"]["path"] == str(DEFAULT_SUITE)
    audit = load_config()["parameters"]
    assert audit["suite"] == str(DEFAULT_SUITE) and audit["dataset"]["source"] == "digits"
    align = load_config("pairs")["parameters"]
    assert align["suite"] == str(resources.path(resources.PAIRS_SUITE))


def test_default_audit_config_loads_from_an_empty_working_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    preflight(config)
    assert Path(config["parameters"]["suite"]).is_file()
    assert Path(load_config("pairs")["parameters"]["suite"]).is_file()


def test_a_relative_suite_resolves_against_the_config_folder_then_the_package(tmp_path: Path) -> None:
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({"parameters": {"suite": "expectations/default.json"}}))
    assert load_config("images", config)["parameters"]["suite"] == str(DEFAULT_SUITE)
    local = tmp_path / "expectations" / "default.json"
    local.parent.mkdir()
    local.write_text(DEFAULT_SUITE.read_text())
    assert load_config("images", config)["parameters"]["suite"] == str(local)


def test_a_suite_can_be_an_fsspec_url(tmp_path: Path) -> None:
    url = f"memory://influencegate-tests/{tmp_path.name}/suite.json"
    storage.write_text(url, DEFAULT_SUITE.read_text())
    suite = load_suite(url)
    assert suite["name"] == json.loads(DEFAULT_SUITE.read_text())["name"] and suite["meta"]["path"] == url
    config = load_config(overrides=[f"suite={url}"])
    assert config["parameters"]["suite"] == url  # a URL is left alone by the relative-path resolution
    preflight(config)
    with pytest.raises(ValueError, match="expectation suite not found"):
        load_suite(url.replace("suite.json", "missing.json"))


def test_repository_configs_are_a_byte_identical_copy_of_the_packaged_files() -> None:
    """configs/ is the copy users read and copy from; the package is the source of truth."""
    copies = sorted(p.relative_to(REPO_CONFIGS).as_posix() for p in REPO_CONFIGS.rglob("*") if p.is_file())
    assert copies == sorted(resources.NAMES)
    for name in resources.NAMES:
        assert (REPO_CONFIGS / name).read_bytes() == resources.path(name).read_bytes(), (
            f"configs/{name} differs from influencegate/resources/{name}: edit the packaged file and copy it")
