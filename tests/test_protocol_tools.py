"""The contract works with the tools platform teams use, offline.

The official AsyncAPI parser (@asyncapi/parser 3, npm) reads docs/asyncapi.yaml and
the schema files it refers to without an error, and datamodel-code-generator builds
models from every JSON Schema with no network: each relative `$ref` names a file that
exists beside it.  The generated models' enums are the code's enums.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from enum import Enum, StrEnum
from pathlib import Path
from types import ModuleType

import pytest

from community_protocol.enums import ENUM_SOURCES
from community_protocol.names import SCHEMA_FILES
from community_protocol.schemas import schema_dir

ROOT = Path(__file__).resolve().parents[1]
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
PARSE = Path(__file__).with_name("asyncapi_parse.cjs")
# Where scripts/bootstrap installs the parser with npm.
NODE_MODULES = Path(os.environ.get("NODE_MODULES", Path(sys.prefix) / "npm" / "node_modules"))
# A proxy that refuses every connection: a tool that tries the network fails loudly.
NOWHERE = "http://127.0.0.1:9"


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[key] = NOWHERE
    env.update(extra)
    return env


def _parse_asyncapi(path: Path) -> tuple[list[dict[str, object]], bool]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("npm (and node) not installed: the AsyncAPI parser cannot run here")
    if not (NODE_MODULES / "@asyncapi" / "parser").is_dir():
        pytest.fail(
            f"@asyncapi/parser is not in {NODE_MODULES}: run scripts/bootstrap (npm log: .venv/npm.log)"
        )
    done = subprocess.run(
        ["node", str(PARSE), str(path)],
        env=_offline_env(NODE_PATH=str(NODE_MODULES)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return lines[:-1], bool(lines[-1]["document"])


def test_the_official_asyncapi_parser_accepts_the_document() -> None:
    diagnostics, parsed = _parse_asyncapi(ASYNCAPI)
    # Spectral severities: 0 error, 1 warning, 2 information, 3 hint.
    problems = [d for d in diagnostics if int(str(d["severity"])) <= 1]
    assert problems == [], "\n".join(json.dumps(d) for d in problems)
    assert parsed


def test_the_parser_check_fails_on_a_reference_to_a_missing_file(tmp_path: Path) -> None:
    # The test above can fail: a $ref to a schema file that is not there is an error.
    (tmp_path / "docs").mkdir()
    schemas = tmp_path / "protocol" / "community_protocol" / "schemas"
    shutil.copytree(ROOT / "protocol" / "community_protocol" / "schemas", schemas)
    text = (schemas / "alarm.json").read_text("utf-8")
    (schemas / "alarm.json").write_text(text.replace('"envelope.json#', '"envelope-1.json#'))
    (tmp_path / "docs" / "asyncapi.yaml").write_text(ASYNCAPI.read_text("utf-8"))
    diagnostics, parsed = _parse_asyncapi(tmp_path / "docs" / "asyncapi.yaml")
    assert not parsed
    assert any(
        d["code"] == "invalid-ref" and "envelope-1.json" in str(d["message"]) for d in diagnostics
    )


PACKAGE = "generated_protocol_models"


def _codegen(schemas: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("datamodel-codegen")),
            "--input",
            str(schemas),
            "--input-file-type",
            "jsonschema",
            "--output",
            str(out),
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--formatters",
            "builtin",
            "--disable-timestamp",
        ],
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """Models datamodel-codegen generated from the schema folder, with no network."""
    out = tmp_path_factory.mktemp("models")
    done = _codegen(Path(str(schema_dir())), out / PACKAGE)
    assert done.returncode == 0, done.stderr[-3000:]
    sys.path.insert(0, str(out))
    try:
        yield {
            name: importlib.import_module(f"{PACKAGE}.{name.replace('-', '_')}")
            for name in SCHEMA_FILES
        }
    finally:
        sys.path.remove(str(out))
        for module in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[module]


def _generated_enums(module: ModuleType) -> list[set[str]]:
    return [
        {str(m.value) for m in v}
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Enum) and len(v) > 0
    ]


# The tests that use the generated models run on one xdist worker, so the module-scoped
# models are generated once per run, not on each worker that gets one of them.
ON_ONE_WORKER = pytest.mark.xdist_group("generated-models")


@ON_ONE_WORKER
def test_a_model_is_generated_from_every_schema_offline(models: dict[str, ModuleType]) -> None:
    assert set(models) == set(SCHEMA_FILES)


@ON_ONE_WORKER
@pytest.mark.parametrize("enum", list(ENUM_SOURCES), ids=lambda e: e.__name__)
def test_the_generated_models_have_the_codes_enums(
    models: dict[str, ModuleType], enum: type[StrEnum]
) -> None:
    values = {str(v.value) for v in enum}
    for schema, _pointer in ENUM_SOURCES[enum]:
        found = _generated_enums(models[schema])
        # A one-value enum is generated as a Literal, not an Enum class.
        if len(values) > 1:
            assert values in found, f"{schema}.json: no generated enum is {sorted(values)}"


def test_the_generator_check_fails_when_a_reference_leaves_the_folder(tmp_path: Path) -> None:
    # What the schemas did before: a $ref named after the old $id, not after a file
    # beside it, leads the generator to a missing file or the network; both fail here.
    schemas = tmp_path / "schemas"
    shutil.copytree(Path(str(schema_dir())), schemas)
    text = (schemas / "alarm.json").read_text("utf-8")
    (schemas / "alarm.json").write_text(text.replace('"envelope.json#', '"envelope-1.json#'))
    assert _codegen(schemas, tmp_path / "out").returncode != 0
