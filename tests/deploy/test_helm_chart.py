"""The Helm chart (deploy/helm/speechprompt), offline: rendered and linted by the Helm v4 SDK embedded in
``helm-python-sdk`` (no helm binary, no cluster, no network), every manifest validated by
``kubernetes-validate --strict`` against a pinned Kubernetes version, the KEDA ScaledObject and the
ServiceMonitor against their vendored CRD schemas (deploy/crds); and the chart held to the server it deploys:
environment names are settings, probes are routes, values and docker-compose.yml describe the same service."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from urllib.parse import urlparse

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from clients.client import TOKEN_ENV, URL_ENV
from server.metrics import Metrics
from server.routes import ROUTERS
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "speechprompt"
CRDS = ROOT / "deploy" / "crds"
K8S_VERSION = "1.32.0"  # the schemas every manifest is validated against (kubernetes-validate ships them)
MANAGED = {"bundle_dir", "store", "admin_token", "host", "port", "drain_timeout_s"}  # set by the chart itself

GPU = yaml.safe_load((CHART / "values-gpu.yaml").read_text())
# everything optional switched on, in two combinations (each option is rendered and validated at least once)
FULL_PVC = {"backbone": {"source": "pvc", "pvc": {"claimName": "gslm-bundles", "subPath": "gslm-hubert100"}},
            "ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["sp.example.com"],
                                                                       "secretName": "sp-tls"}],
                        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "32m"}},
            "autoscaling": {"enabled": False}, "keda": {"enabled": True},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "seedDemoTasks": {"enabled": True}, "redis": {"persistence": {"enabled": False}}}
FULL_INIT = {"backbone": {"source": "init", "init": {"command": [
                 "sh", "-c", "speechprompt download-gslm --dest /bundle/.dl --units 100 --out /bundle"]}},
             "redis": {"enabled": False, "externalUrlSecret": {"name": "sp-redis", "key": "url"}},
             "adminToken": {"existingSecret": "sp-admin", "generate": False},
             "podDisruptionBudget": {"enabled": False}, "topologySpread": {"enabled": False}}
PGSLM = {"backbone": {"builtin": "pgslm-default"}, "seedDemoTasks": {"enabled": True}}
VARIANTS = {"default": {}, "gpu": GPU, "full-pvc": FULL_PVC, "full-init": FULL_INIT, "pgslm": PGSLM}


def render(values: dict | None = None) -> list[dict]:
    """Every object the chart renders for ``values`` (release ``sp`` in namespace ``speech``)."""
    out = helm.Chart.load(CHART).render(values or {}, name="sp", namespace="speech")
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def server_container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def strict_schema(schema: dict) -> dict:
    """A CRD's openAPIV3Schema, strict like ``kubernetes-validate --strict``: an object that lists its
    properties takes no others (unless it preserves unknown fields)."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is validated by the API server
    return schema


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema, from the vendored CRDs."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for ver in crd["spec"]["versions"]:
            out[(f"{group}/{ver['name']}", kind)] = strict_schema(ver["schema"]["openAPIV3Schema"])
    return out


CRD_SCHEMAS = crd_schemas()


def validate(doc: dict) -> None:
    """Raise when ``doc`` is not a valid object of its kind (Kubernetes or vendored CRD schema)."""
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[key])
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("values", [{}, GPU, FULL_PVC, FULL_INIT], ids=["default", "gpu", "full-pvc", "full-init"])
def test_helm_lint_is_clean(values):
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{K8S_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # info only (e.g. "icon is recommended")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_rendered_manifest_validates_strictly(name):
    docs = render(VARIANTS[name])
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds
    for doc in docs:
        validate(doc)
    if name in ("gpu", "full-pvc"):
        assert {"ScaledObject", "ServiceMonitor"} <= kinds  # the CRD objects were among them


def test_the_validators_refuse_broken_objects():
    docs = render(FULL_PVC)
    bad_so = copy.deepcopy(one(docs, "ScaledObject"))
    bad_so["spec"]["triggers"][0]["metdata"] = bad_so["spec"]["triggers"][0].pop("metadata")  # a typo
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_so)
    bad_sm = copy.deepcopy(one(docs, "ServiceMonitor"))
    bad_sm["spec"]["endpoints"][0]["interval"] = "15 seconds"  # not a Prometheus duration
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_sm)
    bad_dep = copy.deepcopy(one(docs, "Deployment"))
    bad_dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # unknown field: strict
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad_dep)


def setting_env_names() -> set[str]:
    return {f"SPEECHPROMPT_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_environment_variable_the_chart_sets_is_a_setting(name):
    docs = render(VARIANTS[name])
    env = [e["name"] for e in server_container(docs)["env"]]
    ours = [n for n in env if n.startswith("SPEECHPROMPT_")]
    assert len(ours) == len(set(ours)), f"set twice: {ours}"
    assert set(ours) <= setting_env_names(), set(ours) - setting_env_names()
    assert set(env) - set(ours) == {"OMP_NUM_THREADS"}
    for job in (d for d in docs if d["kind"] == "Job"):  # the seed job runs the client, not the server
        names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert names == {URL_ENV, TOKEN_ENV}


def test_the_settings_values_are_exactly_the_server_settings_the_chart_does_not_set():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["settings"]["properties"])
    assert allowed == set(Settings.model_fields) - MANAGED
    every = {"settings": {"max_classes": 64, "store_poll_interval_s": 0.5, "prompt_bank_budget_bytes": 10**9,
                          "precision": "fp32/bf16"}}
    env = {e["name"]: e["value"] for e in server_container(render(every))["env"] if "value" in e}
    assert env["SPEECHPROMPT_MAX_CLASSES"] == "64" and env["SPEECHPROMPT_STORE_POLL_INTERVAL_S"] == "0.5"
    assert env["SPEECHPROMPT_PROMPT_BANK_BUDGET_BYTES"] == "1000000000"  # no float exponent in env values
    s = Settings(**{k.removeprefix("SPEECHPROMPT_").lower(): v for k, v in env.items()
                    if k.startswith("SPEECHPROMPT_")})
    assert s.max_classes == 64 and s.prompt_bank_budget_bytes == 10**9 and s.drain_timeout_s == 20
    assert s.precision == "fp32/bf16"
    with pytest.raises(helm.HelmValuesError):  # the schema refuses what the server's validator would
        helm.Chart.load(CHART).validate_schema({"settings": {"precision": "fp16"}})


def test_schema_refuses_a_token_in_clear_and_settings_the_chart_owns():
    chart = helm.Chart.load(CHART)
    chart.validate_schema(GPU)
    for bad in ({"adminToken": {"value": "hunter2"}}, {"settings": {"admin_token": "hunter2"}},
                {"settings": {"store": "redis://x"}}, {"settings": {"no_such_setting": 1}},
                {"backbone": {"source": "s3"}}, {"redis": {"externalUrl": "redis://:secret@host:6379/0"}}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_the_admin_token_only_ever_comes_from_a_secret():
    for values in VARIANTS.values():
        docs = render(values)
        token = [e for e in server_container(docs)["env"] if e["name"] == "SPEECHPROMPT_ADMIN_TOKEN"]
        assert len(token) == 1 and set(token[0]) == {"name", "valueFrom"}
        assert "secretKeyRef" in token[0]["valueFrom"]
    generated = one(render(), "Secret")
    assert len(generated["data"]["token"]) > 40  # random, base64
    assert not [d for d in render(FULL_INIT) if d["kind"] == "Secret"]  # existingSecret: the chart makes none


def test_probes_and_scrape_path_are_real_routes_and_the_queue_metric_exists():
    get_routes = {r.path for router in ROUTERS for r in router.routes if "GET" in getattr(r, "methods", ())}
    assert {"/readyz", "/healthz", "/metrics", "/v2/health/ready"} <= get_routes
    docs = render(FULL_PVC)
    c = server_container(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in get_routes
        assert c[probe]["httpGet"]["port"] == c["ports"][0]["name"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["path"] in get_routes
    query = one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    metric = re.match(r"sum\((\w+)\{", query).group(1)
    assert f"# TYPE {metric} gauge" in Metrics().render().decode()


def test_graceful_shutdown_matches_the_servers_drain_time():
    for values in VARIANTS.values():
        docs = render(values)
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        c = pod["containers"][0]
        drain = int(next(e["value"] for e in c["env"] if e["name"] == "SPEECHPROMPT_DRAIN_TIMEOUT_S"))
        sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > sleep + drain
    assert Settings().drain_timeout_s == 20  # the chart's default shutdown.drainTimeoutSeconds


def test_security_context_and_no_service_account_token():
    for values in VARIANTS.values():
        for doc in render(values):
            if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
    sa = one(render(), "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_only_the_server_pods_reach_redis():
    docs = render()
    policy = one(docs, "NetworkPolicy")
    redis = one(docs, "StatefulSet")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    server_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= server_labels.items()
    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["command"]
    store = next(e["value"] for e in server_container(docs)["env"] if e["name"] == "SPEECHPROMPT_STORE")
    assert urlparse(store).hostname == one([d for d in docs if d["kind"] == "Service"
                                            and "redis" in d["metadata"]["name"]], "Service")["metadata"]["name"]


def test_hpa_and_keda_cannot_both_own_the_deployment():
    with pytest.raises(helm.HelmError, match="KEDA creates its own HPA"):
        render({"keda": {"enabled": True}})
    docs = render(FULL_PVC)
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in docs}
    assert one(docs, "ScaledObject")["spec"]["minReplicaCount"] >= 1  # scale-to-zero is off by default
    assert "replicas" not in one(docs, "Deployment")["spec"]  # the autoscaler owns the count


def compose_api() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_chart_and_compose_describe_the_same_service():
    services = compose_api()
    cpu, gpu = env_of(server_container(render())), env_of(server_container(render(GPU)))
    for compose_name, chart_env in (("api1", cpu), ("gpu1", gpu)):
        compose_env = services[compose_name]["environment"]
        names = {k for k in compose_env if k.startswith("SPEECHPROMPT_")}
        assert names <= set(chart_env), names - set(chart_env)
        assert compose_env["SPEECHPROMPT_BUNDLE_DIR"] == chart_env["SPEECHPROMPT_BUNDLE_DIR"]
        assert compose_env["SPEECHPROMPT_DEVICE"] == chart_env["SPEECHPROMPT_DEVICE"]
        assert urlparse(compose_env["SPEECHPROMPT_STORE"]).scheme == urlparse(chart_env["SPEECHPROMPT_STORE"]).scheme
    # the compose healthcheck polls $SPEECHPROMPT_HEALTH_URL, set in the image: the chart's readiness path
    dockerfile = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    health = re.search(r"SPEECHPROMPT_HEALTH_URL=(\S+)", dockerfile).group(1)
    assert "SPEECHPROMPT_HEALTH_URL" in " ".join(services["api1"]["healthcheck"]["test"])
    c = server_container(render())
    assert urlparse(health).path == c["readinessProbe"]["httpGet"]["path"]
    assert urlparse(health).port == c["ports"][0]["containerPort"]
    # the same grace before a kill: compose stop_grace_period == the pod's terminationGracePeriodSeconds
    grace = int(services["api1"]["stop_grace_period"].rstrip("s"))
    assert grace == one(render(), "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = float(services["api1"]["environment"]["SPEECHPROMPT_DRAIN_TIMEOUT_S"])
    assert drain == float(env_of(c)["SPEECHPROMPT_DRAIN_TIMEOUT_S"]) == Settings().drain_timeout_s < grace


def test_the_image_carries_both_default_bundles_the_chart_can_choose():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    kinds = {}
    for builtin in schema["properties"]["backbone"]["properties"]["builtin"]["enum"]:
        spec = yaml.safe_load((ROOT / "models" / builtin / "backbone.json").read_text())
        kinds[builtin] = spec["kind"]
    assert kinds["default"] == "gslm" and kinds["pgslm-default"] == "pgslm"
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert re.search(r"^COPY .*\bmodels/ /models/$", text, re.M)
        assert re.search(r"^COPY .*\bprompts_store_pgslm/ /prompts_store_pgslm/$", text, re.M)
    docs = render(PGSLM)
    env = env_of(server_container(docs))
    assert env["SPEECHPROMPT_BUNDLE_DIR"] == "/models/pgslm-default"
    seed = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert seed == ["speechprompt-seed-tasks", "/prompts_store_pgslm"]  # packages made for that backbone
    assert (ROOT / "prompts_store_pgslm").is_dir()


def test_check_chart_script_validates_user_values_and_refuses_bad_ones(tmp_path, capsys):
    """scripts/check_chart.py (the docs' offline check without a helm binary): user values files merged in
    order, lint + strict validation; a value the schema refuses exits 1 naming it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_chart", ROOT / "scripts" / "check_chart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump({"threads": 3, "settings": {"precision": "bf16", "max_classes": 64}}))
    b.write_text(yaml.safe_dump({"settings": {"max_classes": 32}}))
    assert mod.main(["-f", str(a), "-f", str(b), "--print"]) == 0
    out = capsys.readouterr()
    dep = next(d for d in yaml.safe_load_all(out.out) if d and d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == "3" and env["SPEECHPROMPT_MAX_CLASSES"] == "32"
    assert env["SPEECHPROMPT_PRECISION"] == "bf16" and "Kubernetes 1.32.0: ok" in out.err
    b.write_text(yaml.safe_dump({"settings": {"precision": "fp16"}}))
    assert mod.main(["-f", str(a), "-f", str(b)]) == 1
    assert "precision" in capsys.readouterr().err
