"""Check the Helm chart with YOUR values, offline and without a ``helm`` binary: Helm v4's lint and render (the
``helm-python-sdk`` package embeds it; installed by the set-up with the ``dev`` extra), then every rendered object
validated strictly against a Kubernetes version's schemas (``kubernetes-validate``). Prints the manifests with
``--print`` (e.g. to pipe into ``kubectl apply --dry-run=server -f -`` where a cluster is at hand).

    .venv/bin/python scripts/check_chart.py -f my-values.yaml [-f more.yaml] [--print]

Exit 0 when lint has no errors or warnings and every object validates; 1 otherwise (each problem on a line).
The CRD-backed objects (KEDA ScaledObject, ServiceMonitor) are checked by ``tests/deploy`` against vendored CRDs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "speechprompt"
CRD_KINDS = {"ScaledObject", "ServiceMonitor"}


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base`` (maps merged key by key, anything else replaced), as ``helm -f a -f b`` does."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--values", type=Path, action="append", default=[], help="values file (repeatable)")
    ap.add_argument("--name", default="sp", help="release name")
    ap.add_argument("--namespace", default="speech")
    ap.add_argument("--kube-version", default="1.32.0")
    ap.add_argument("--print", action="store_true", help="print the rendered manifests to stdout")
    a = ap.parse_args(argv)
    values: dict = {}
    chart = helm.Chart.load(CHART)
    for f in a.values:
        values = deep_merge(values, yaml.safe_load(f.read_text()) or {})
    problems = []
    try:
        chart.validate_schema(values)
    except helm.HelmValuesError as exc:
        sys.stderr.write(f"values: {exc}\n")
        return 1
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{a.kube_version}")
    problems += [f"lint: {e}" for e in report["errors"]]
    problems += [f"lint: {m}" for m in report["messages"] if m["severity"] >= 2]
    docs = []
    for path, text in sorted(chart.render(values, name=a.name, namespace=a.namespace).items()):
        if path.endswith(".yaml"):
            docs += [(path, d) for d in yaml.safe_load_all(text) if d]
    for path, doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, a.kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{path} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    if a.print:
        sys.stdout.write("\n---\n".join(yaml.safe_dump(d, sort_keys=False) for _, d in docs))
    for p in problems:
        sys.stderr.write(p + "\n")
    kinds = ", ".join(sorted({d["kind"] for _, d in docs}))
    sys.stderr.write(f"{len(docs)} objects ({kinds}); Kubernetes {a.kube_version}: "
                     f"{'ok' if not problems else f'{len(problems)} problem(s)'}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
