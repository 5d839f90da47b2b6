"""The deployment files are code too: the Dockerfile's steps, prefect.yaml's entrypoints and parameters, and every
command, flag and setting the Kubernetes manifests and the CI workflow name must exist in this tree.

No container engine is assumed: the Dockerfile's COPY sources must exist and its Python steps run against the
checkout (with the installed project), which is what its image would run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from flows.cli import app
from tasks.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENTS = REPO / "deployments"


def dockerfile_steps() -> tuple[list[str], list[str], list[str]]:
    """(COPY sources, RUN commands, CMD argv) of deployments/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOYMENTS / "Dockerfile").read_text())
    copies, runs, cmd = [], [], []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "COPY":
            copies += shlex.split(rest)[:-1]
        elif word == "RUN":
            runs += [part.strip() for part in rest.split("&&")]
        elif word == "CMD":
            cmd = json.loads(rest)
    return copies, runs, cmd


def ragops_commands(text: str) -> list[list[str]]:
    """Every `ragops ...` command line in a shell text (a YAML `run:` step, a README example)."""
    found = []
    for line in text.splitlines():
        match = re.search(r"(?:^|[\s/])ragops\s+([^|&;#]+)", line)
        if match:
            found.append(shlex.split(match.group(1)))
    return found


def check_cli(argv: list[str]) -> None:
    """Fail unless `ragops argv...` names an existing command and only options it has."""
    command: Any = typer.main.get_command(app)
    words = list(argv)
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        assert name in command.commands, f"`ragops {' '.join(argv)}`: no command {name!r}"
        command = command.commands[name]
    known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    flags = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"`ragops {' '.join(argv)}`: {unknown} not options of {command.name!r} ({sorted(known)})"


def settings_names() -> set[str]:
    return {f"RAGOPS_{name.upper()}" for name in Settings.model_fields}


def test_dockerfile_copies_existing_paths_and_its_python_steps_run() -> None:
    copies, runs, cmd = dockerfile_steps()
    assert copies and runs and cmd
    missing = [path for path in copies if not (REPO / path).exists()]
    assert not missing, f"Dockerfile copies paths that do not exist: {missing}"
    python_steps = [step for step in runs if step.startswith("python -c")]
    assert python_steps, "the Dockerfile checks its image with a Python step"
    for step in python_steps:
        argv = shlex.split(step)
        done = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"Dockerfile step failed: {step}\n{done.stderr[-2000:]}"
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert cmd[:3] == ["prefect", "worker", "start"] and cmd[cmd.index("--pool") + 1] in pools


def test_dockerfile_env_names_are_settings() -> None:
    names = set(re.findall(r"\bRAGOPS_[A-Z_]+", (DEPLOYMENTS / "Dockerfile").read_text()))
    assert names and names <= settings_names(), names - settings_names()


def deployments_of_prefect_yaml() -> list[dict[str, Any]]:
    return list(yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"])


@pytest.mark.parametrize("deployment", deployments_of_prefect_yaml(), ids=lambda d: d["name"])
def test_prefect_yaml_entrypoint_is_a_flow_taking_its_parameters(deployment: dict[str, Any]) -> None:
    path, _, function = deployment["entrypoint"].partition(":")
    assert (REPO / path).is_file(), deployment["entrypoint"]
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, function)
    assert hasattr(flow, "fn"), f"{deployment['entrypoint']} is not a Prefect flow"
    accepted = inspect.signature(flow.fn).parameters
    unknown = set(deployment.get("parameters") or {}) - set(accepted)
    assert not unknown, f"{deployment['name']}: parameters {unknown} are not arguments of {function}"


def test_kubernetes_manifests_name_existing_commands_and_settings() -> None:
    service = list(yaml.safe_load_all((DEPLOYMENTS / "kubernetes/query-service.yaml").read_text()))
    commands = [
        container["command"]
        for doc in service
        if doc.get("kind") == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert commands
    for command in commands:
        assert command[0] == "ragops"
        check_cli(command[1:])
    template = json.loads((DEPLOYMENTS / "kubernetes/base-job-template.json").read_text())
    env_names = set(re.findall(r"\bRAGOPS_[A-Z_]+", json.dumps(template)))
    manifest_names = set(re.findall(r"\bRAGOPS_[A-Z_]+", (DEPLOYMENTS / "kubernetes/query-service.yaml").read_text()))
    assert env_names | manifest_names <= settings_names(), (env_names | manifest_names) - settings_names()


def test_github_workflow_runs_existing_commands_and_targets() -> None:
    workflow = yaml.safe_load((DEPLOYMENTS / "github/ragops-gate.yml").read_text())
    steps = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    commands = [argv for step in steps for argv in ragops_commands(step)]
    assert commands, "the workflow runs ragops"
    for argv in commands:
        check_cli(argv)
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    for step in steps:
        for target in re.findall(r"\bmake\s+([\w-]+)", step):
            assert target in targets, f"the workflow runs `make {target}`; the Makefile has {sorted(targets)}"
    env_names = set(re.findall(r"\bRAGOPS_[A-Z_]+", (DEPLOYMENTS / "github/ragops-gate.yml").read_text()))
    assert env_names <= settings_names(), env_names - settings_names()
    gate = [argv for argv in commands if argv[0] == "gate"]
    deployment = gate[0][gate[0].index("--deployment") + 1]
    flow_name, _, name = deployment.partition("/")
    named = {}
    for d in deployments_of_prefect_yaml():
        path, _, function = d["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        named[f"{getattr(module, function).name}/{d['name']}"] = d
    assert f"{flow_name}/{name}" in named, f"the workflow gates {deployment}; prefect.yaml has {sorted(named)}"


def test_the_checks_catch_a_wrong_command_and_flag() -> None:
    with pytest.raises(AssertionError, match="no command"):
        check_cli(["serv", "--host", "x"])
    with pytest.raises(AssertionError, match="not options"):
        check_cli(["serve", "--hostname", "x"])
    check_cli(["serve", "--host", "0.0.0.0"])
