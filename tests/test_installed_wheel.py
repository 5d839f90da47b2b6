"""ragops as an installed tool: the wheel (not an editable install, not this checkout) in a fresh virtual environment,
run from a directory of the user's own on a folder of their own documents: ingest, evaluate, promote, versions.

The fresh environment takes the pinned dependencies from this one (a path entry in a .pth file, no download); the
ragops packages themselves come only from the wheel, which the test checks before the journey."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


HANDBOOK = {
    "kitchen.md": (
        "# The office kitchen",
        "The dishwasher runs every evening at six, so load it before you leave.",
        "Milk for the coffee machine is delivered on Mondays and Thursdays by the dairy on Elm Street.",
        "Anyone who empties the last coffee bean container orders the next box through the facilities form.",
        "The fridge is cleared every Friday afternoon, and unlabelled food goes to the compost bin.",
    ),
    "bikes.md": (
        "# Cycling to work",
        "Bicycles are parked in the basement cage, which opens with the same badge as the front door.",
        "The repair stand near the cage has a floor pump, tyre levers and a set of hex keys.",
        "Showers on the second floor are open from seven in the morning until eight at night.",
        "A cyclist who rides in more than twelve days a month gets a yearly service voucher.",
    ),
    "visitors.md": (
        "# Visitors",
        "Visitors sign in at the reception desk and wear a green lanyard while they are in the building.",
        "A host collects each visitor from reception and walks them back there at the end of the visit.",
        "Meeting rooms for visitors are booked through the calendar resource named Harbour.",
        "Guest wifi passwords change every Monday and are printed on the card beside the reception desk.",
    ),
}
QUESTIONS = [
    ("kitchen.md", 1, "When does the office dishwasher run?"),
    ("kitchen.md", 2, "On which days is milk for the coffee machine delivered?"),
    ("kitchen.md", 3, "Who orders more coffee beans?"),
    ("kitchen.md", 4, "What happens to unlabelled food in the fridge?"),
    ("bikes.md", 1, "Where do I park my bicycle?"),
    ("bikes.md", 2, "What tools does the repair stand have?"),
    ("bikes.md", 3, "When are the showers open?"),
    ("bikes.md", 4, "Who gets a bike service voucher?"),
    ("visitors.md", 1, "What do visitors wear in the building?"),
    ("visitors.md", 2, "Who walks a visitor back to reception?"),
    ("visitors.md", 3, "How do I book a meeting room for a visitor?"),
    ("visitors.md", 4, "Where do guests find the wifi password?"),
]


def write_handbook(root: Path) -> list[dict[str, object]]:
    """A corpus of one's own (not the sample) and its golden set: each answer is a sentence of its page."""
    root.mkdir(parents=True)
    for name, lines in HANDBOOK.items():
        (root / name).write_text(lines[0] + "\n\n" + "\n\n".join(lines[1:]) + "\n", encoding="utf-8")
    return [
        {
            "id": f"h{i:02d}",
            "question": question,
            "kind": "factoid",
            "reference_answer": HANDBOOK[page][line],
            "evidence": [{"doc_id": page, "passage": HANDBOOK[page][line], "relevance": 2}],
        }
        for i, (page, line, question) in enumerate(QUESTIONS)
    ]


def outside_env(**extra: str) -> dict[str, str]:
    """This environment without ragops, Prefect or import-path settings (nothing of the checkout leaks in), plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_", "PYTHONPATH"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def run_python(installed: Path, code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`code` run by the fresh venv's interpreter."""
    return subprocess.run(
        [str(installed / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the ragops wheel; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy of what the wheel is built from: no build/ folder left from an older layout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(REPO / name, source / name)
    for package in ("flows", "tasks", "evaluations"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = root.glob("ragops-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_ragops_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


@pytest.mark.usefixtures("prefect_server")
def test_the_installed_wheel_runs_the_journey_from_another_directory(installed: Path, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    project = tmp_path / "my-project"
    project.mkdir()
    env = outside_env(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),  # the session's test server: no temporary server per command
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        RAGOPS_PREFECT_HOME=str(tmp_path / "no-local-server"),
        HF_HUB_OFFLINE="1",
        RAGOPS_EMBED_LOCAL_MAX_CHUNKS="100000",
        NO_COLOR="1",
    )

    def ragops(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(installed / "ragops"), *args], cwd=project, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"ragops {' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    # the packages come from the wheel, not from this checkout
    imported = run_python(
        installed, "import tasks, evaluations; print(tasks.__file__, evaluations.__file__)", project, env
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert str(REPO) not in imported.stdout and str(installed.parent) in imported.stdout, imported.stdout

    questions = write_handbook(project / "docs")
    (project / "golden.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    assert not (project / "evaluations").exists()  # the gate policy can only be the packaged default

    ragops("ingest", "docs", "--json", "ingest.json")
    ingested = json.loads((project / "ingest.json").read_text())
    assert ingested["docs_new"] == 3 and ingested["chunks_embedded"] >= 3
    assert (project / ".ragops" / "lancedb").is_dir()  # relative settings resolve against the directory run from

    printed = ragops("evaluate", "--golden-set", "golden.jsonl", "--json", "evaluation.json").stdout
    assert "…" not in printed  # piped: metric names whole, not `id_based_conte…`
    assert "id_based_context_recall" in printed and "non_llm_context_precision_with_reference" in printed
    evaluation = json.loads((project / "evaluation.json").read_text())
    assert evaluation["candidate_version"] == ingested["table_version"]
    assert evaluation["policy_hash"]  # the bundled default policy was read

    ragops("promote", "--golden-set", "golden.jsonl", "--json", "decision.json")
    decision = json.loads((project / "decision.json").read_text())
    assert decision["decision"] == "promote", decision["reasons"]
    assert (project / decision["report_html"]).is_file()  # a relative RAGOPS_REPORTS_DIR: under the project

    listed = ragops("versions")  # stdout is a pipe: the production tag and candidate tag print whole
    assert "production" in listed.stdout and ingested["candidate_tag"] in listed.stdout
    assert "\x1b[" not in listed.stdout  # NO_COLOR


def test_a_missing_policy_or_golden_set_says_where_it_was_looked_for(installed: Path, tmp_path: Path) -> None:
    code = "import evaluations.gate as g; g.load_policy('policies/mine.yaml')"
    done = run_python(installed, code, tmp_path, outside_env())
    assert done.returncode != 0
    assert f"relative to the directory ragops runs in, {tmp_path}" in done.stderr
    assert "RAGOPS_POLICY" in done.stderr
