#!/usr/bin/env python3
"""Static checks of deploy/: the Kubernetes manifests and the compose file
parse, refer to each other consistently, and their flags, environment and
config files are accepted by the node's own config loader
(`purgecast run --print-config`), which prints the effective config; the
effective config is then checked against ports, probes, volumes, the Secret
and the certificates. Also checks that both Dockerfiles give the same
runtime settings.

usage: check_manifests.py PURGECAST_BINARY
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
    return cond


def load_config(binary, args, env):
    """Runs the node's config loader; returns (exit code, parsed config or None, stderr)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run([binary, *args, "--print-config"], env={**base, **env},
                          capture_output=True, text=True, timeout=30)
    try:
        cfg = tomllib.loads(proc.stdout) if proc.stdout else None
    except tomllib.TOMLDecodeError:
        cfg = None
    return proc.returncode, cfg, proc.stderr.strip()


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def host_of(addr):
    return addr.rsplit(":", 1)[0]


def cert_sans(pem_path):
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(pem_path)],
                         capture_output=True, text=True, timeout=30)
    return set(re.findall(r"(?:DNS|IP Address):([^,\s]+)", out.stdout))


# ---------------------------------------------------------------- Kubernetes

def k8s_docs():
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    files = sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    check(sorted(kust.get("resources", [])) == files,
          f"kustomization resources {kust.get('resources')} != manifests {files}")
    docs = []
    for name in files:
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            if doc is None:
                continue
            for key in ("apiVersion", "kind", "metadata"):
                check(key in doc, f"{name}: a document has no {key}")
            check(bool(doc.get("metadata", {}).get("name")), f"{name}: a document has no metadata.name")
            docs.append(doc)
    return docs


def one(docs, kind, pred=lambda d: True):
    found = [d for d in docs if d.get("kind") == kind and pred(d)]
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0] if found else {}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def expand(text, env):
    """Kubernetes' $(VAR) expansion in args and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def check_k8s(binary, tmp):
    docs = k8s_docs()
    sts = one(docs, "StatefulSet")
    headless = one(docs, "Service", lambda d: d["spec"].get("clusterIP") == "None")
    cm = one(docs, "ConfigMap")
    pdb = one(docs, "PodDisruptionBudget")
    if FAILURES:
        return
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    check(spec["serviceName"] == headless["metadata"]["name"], "StatefulSet serviceName is not the headless Service")
    check(selects(spec["selector"]["matchLabels"], labels), "StatefulSet selector does not match its pods")
    check(selects(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selector does not match the pods")
    check(headless["spec"].get("publishNotReadyAddresses") is True, "headless Service must publish not-ready pods")
    (container,) = pod["containers"]
    ports = {p["name"]: p for p in container["ports"]}
    demo = one(docs, "Deployment")
    (demo_container,) = demo["spec"]["template"]["spec"]["containers"]
    demo_labels = demo["spec"]["template"]["metadata"]["labels"]
    check(selects(demo["spec"]["selector"]["matchLabels"], demo_labels), "demo origin: selector does not match its pods")
    check(not selects(spec["selector"]["matchLabels"], demo_labels), "the StatefulSet's selector takes the demo origin's pods")
    check(not selects(demo["spec"]["selector"]["matchLabels"], labels), "the demo origin's selector takes the nodes' pods")
    check(demo_labels.get("app.kubernetes.io/component") == "demo", "the demo origin is not labelled as a demo")
    # Each Service selects the pods of one workload and targets its named ports.
    workloads = {"StatefulSet": (labels, ports),
                 "Deployment": (demo_labels, {p["name"]: p for p in demo_container["ports"]})}
    services = {}
    for svc in (d for d in docs if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        chosen = [k for k, (l, _) in workloads.items() if selects(svc["spec"]["selector"], l)]
        if not check(len(chosen) == 1, f"Service {name} selects the pods of {chosen}, not of one workload"):
            continue
        services[name] = (svc, chosen[0])
        for p in svc["spec"]["ports"]:
            target = workloads[chosen[0]][1].get(p["targetPort"])
            check(target is not None and target["protocol"] == p["protocol"],
                  f"Service {name} port {p['name']}: no container port {p['targetPort']}")
    client_svc = [s for s, k in services.values() if k == "StatefulSet" and s["spec"].get("clusterIP") != "None"]
    check(any(p["targetPort"] == "http" for s in client_svc for p in s["spec"]["ports"]),
          "no client Service exposes the edge (container port http)")
    demo_listen = demo_container["args"][demo_container["args"].index("--listen") + 1]
    check(port_of(demo_listen) == {p["name"]: p for p in demo_container["ports"]}["http"]["containerPort"]
          and host_of(demo_listen) == "0.0.0.0", f"demo origin listens on {demo_listen}, not on its container port")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = container.get(probe, {}).get("httpGet", {})
        check(http.get("port") in ports and http.get("path") in ("/readyz", "/healthz"), f"{probe} is not an HTTP health check")
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness must use /readyz")

    # Volumes, mapped to local directories for the config loader.
    secret_doc = yaml.safe_load(subprocess.run(
        [str(DEPLOY / "k8s/gen-secret.sh"), "--replicas", str(spec["replicas"]), "--out", str(tmp / "k8s-ca")],
        env={**os.environ, "PURGECAST_BIN": binary}, capture_output=True, text=True, check=True, timeout=60).stdout)
    check("ca-key.pem" not in secret_doc["data"], "the Secret must not carry the CA key")
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    local = {}
    for m in container["volumeMounts"]:
        name, d = m["name"], tmp / f"k8s-vol-{m['name']}"
        d.mkdir()
        vol = volumes.get(name, {})
        if "configMap" in vol:
            check(vol["configMap"]["name"] == cm["metadata"]["name"], f"volume {name}: unknown ConfigMap")
            for key, text in cm["data"].items():
                (d / key).write_text(text)
        elif "secret" in vol and vol["secret"].get("optional"):
            # The operator's own Secret (the tenants file): absent here, as
            # on a cluster that has none; the pod starts without it.
            check(m.get("readOnly", False), f"volume {name}: an optional Secret must be mounted read-only")
        elif "secret" in vol:
            check(vol["secret"]["secretName"] == secret_doc["metadata"]["name"], f"volume {name}: not the generated Secret")
            for key, b64 in secret_doc["data"].items():
                (d / key).write_bytes(base64.b64decode(b64))
        else:
            check(name in claims, f"volumeMount {name}: no such volume or claim")
        local[m["mountPath"]] = (d, m.get("readOnly", False))

    def to_local(path):
        for mount, (d, _) in local.items():
            if path == mount or path.startswith(mount + "/"):
                return d / os.path.relpath(path, mount)
        return None

    replicas = spec["replicas"]
    for i in range(replicas):
        pod_name = f"{sts['metadata']['name']}-{i}"
        env = {}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod_name
            else:
                check(False, f"env {e['name']}: unsupported source")
        args = [expand(a, env) for a in container["args"]]
        cfg_args = [a for a in args if a.startswith("--config=")]
        check(len(cfg_args) == 1, "args must name the config file once (--config=PATH)")
        for a in cfg_args:
            args[args.index(a)] = "--config=" + str(to_local(a.split("=", 1)[1]))
        code, cfg, err = load_config(binary, args, env)
        if not check(code == 0 and cfg, f"{pod_name}: config loader refused the manifest ({code}): {err}"):
            continue
        check(cfg["name"] == pod_name, f"{pod_name}: name is {cfg['name']}")
        adv = cfg.get("advertise_peer", "")
        check(adv == f"{pod_name}.{headless['metadata']['name']}:{ports['peer']['containerPort']}",
              f"{pod_name}: advertise_peer {adv!r} is not its headless DNS name")
        for key, port in (("listen_peer", "peer"), ("listen_api", "api"), ("listen_metrics", "metrics")):
            check(port_of(cfg[key]) == ports[port]["containerPort"], f"{pod_name}: {key} is not container port {port}")
            check(host_of(cfg[key]) == "0.0.0.0", f"{pod_name}: {key} must listen on all interfaces in a pod")
        check(ports["peer"]["protocol"] == "UDP", "the peer port is QUIC: UDP")
        edge = cfg.get("edge", {})
        check(port_of(edge.get("listen", ":0")) == ports["http"]["containerPort"]
              and host_of(edge.get("listen", "")) == "0.0.0.0", f"{pod_name}: edge.listen is not container port http on all interfaces")
        http_api = cfg.get("http_api", {})
        check(port_of(http_api.get("listen", ":0")) == ports["purge-http"]["containerPort"]
              and host_of(http_api.get("listen", "")) == "0.0.0.0",
              f"{pod_name}: http_api.listen is not container port purge-http on all interfaces")
        origin_svc, _, origin_port = edge.get("default_origin", "").partition(":")
        svc, kind = services.get(origin_svc, ({}, None))
        check(kind == "Deployment" and any(p["port"] == int(origin_port or 0) for p in svc["spec"]["ports"]),
              f"{pod_name}: edge.default_origin {edge.get('default_origin')!r} is not the demo origin's Service and port")
        data = to_local(cfg["data_dir"])
        check(data is not None and not local[cfg["data_dir"]][1], f"{pod_name}: data_dir is not a writable volume")
        for key in ("ca", "cert", "key"):
            f = to_local(cfg["tls"][key])
            check(f is not None and f.is_file(), f"{pod_name}: tls.{key} {cfg['tls'][key]} is not in the Secret")
        cert = to_local(cfg["tls"]["cert"])
        if cert and cert.is_file():
            check(host_of(adv) in cert_sans(cert), f"{pod_name}: certificate lacks the advertised name {host_of(adv)}")
        check(len(cfg["seeds"]) >= 1, f"{pod_name}: no seeds")
        for seed in cfg["seeds"]:
            m = re.fullmatch(r"(.+)-(\d+)\.(.+):(\d+)", seed)
            check(m is not None and m.group(1) == sts["metadata"]["name"] and int(m.group(2)) < replicas
                  and m.group(3) == headless["metadata"]["name"] and int(m.group(4)) == ports["peer"]["containerPort"],
                  f"{pod_name}: seed {seed} is not a pod of this StatefulSet")
        if i == 0:
            # The loader must reject a bad value: the same manifest plus one.
            code, _, _ = load_config(binary, args + ["--log-format=xml"], env)
            check(code != 0, "config loader accepted --log-format=xml")
    if shutil.which("kubectl"):
        built = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=120)
        if check(built.returncode == 0, f"kubectl kustomize failed: {built.stderr.strip()}"):
            kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout) if d)
            check(kinds == sorted(d["kind"] for d in docs), f"kustomize output kinds {kinds}")
    print(f"k8s: {len(docs)} documents, {replicas} pods' flags accepted by the config loader")


# ---------------------------------------------------------------- compose

def subst(text):
    return re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), text)


def check_compose(binary):
    path = DEPLOY / "compose/docker-compose.yml"
    doc = yaml.safe_load(subst(path.read_text()))
    services = doc["services"]
    nodes = sorted(n for n in services if n.startswith("node-"))
    check(len(nodes) == 5, f"compose: {len(nodes)} node services, expected 5")
    certs_cmd = services["certs"]["command"]
    issued = {certs_cmd[k + 1] for k, a in enumerate(certs_cmd) if a == "--node"}
    data_volumes = set()
    for n in nodes:
        s = services[n]
        mounts = dict(reversed(v.split(":")[:2]) for v in s["volumes"])
        config = (path.parent / mounts["/etc/purgecast/node.toml"]).resolve()
        env = {k: str(v) for k, v in s["environment"].items()}
        env["PURGECAST_CONFIG"] = str(config)
        code, cfg, err = load_config(binary, s["command"], env)
        if not check(code == 0 and cfg, f"compose {n}: config loader refused it ({code}): {err}"):
            continue
        check(cfg["name"] == n and cfg["advertise_peer"] == f"{n}:7200", f"compose {n}: name/advertise_peer")
        check(sorted(cfg["seeds"]) == sorted(f"{m}:7200" for m in nodes if m != n), f"compose {n}: seeds")
        check(cfg["tls"]["cert"] == f"/certs/{n}.pem" and n in issued, f"compose {n}: certificate not issued")
        check(mounts.get("/certs") == "certs" and cfg["data_dir"] == "/data", f"compose {n}: volumes")
        data_volumes.add(mounts.get("/data"))
        published = {int(p.split(":")[2]) for p in s["ports"]}
        check(all(p.startswith("127.0.0.1:") for p in s["ports"]), f"compose {n}: publishes beyond loopback")
        edge = cfg.get("edge", {})
        check(host_of(edge.get("listen", "")) == "0.0.0.0", f"compose {n}: the edge must listen on all interfaces")
        http_api = cfg.get("http_api", {}).get("listen", ":0")
        check(published == {port_of(cfg["listen_api"]), port_of(cfg["listen_metrics"]), port_of(edge.get("listen", ":0")),
                             port_of(http_api)},
              f"compose {n}: ports")
        # The default origin is a service of this file, listening where the edge looks.
        origin, _, origin_port = edge.get("default_origin", "").partition(":")
        cmd = services.get(origin, {}).get("command", [])
        listen = cmd[cmd.index("--listen") + 1] if "--listen" in cmd else ""
        check(cmd[:1] == ["origin"] and listen == f"0.0.0.0:{origin_port}"
              and set(services[origin].get("networks", [])) >= set(s["networks"]),
              f"compose {n}: edge.default_origin {edge.get('default_origin')!r} is not the origin service")
        check(s["healthcheck"]["test"][0] == "CMD", f"compose {n}: health check")
    check(len(data_volumes) == len(nodes) and None not in data_volumes, "compose: one data volume per node")
    print(f"compose: {len(nodes)} nodes' environment accepted by the config loader")


# ---------------------------------------------------------------- images

RUNTIME = ("ENV", "USER", "WORKDIR", "EXPOSE", "VOLUME", "ENTRYPOINT", "CMD")


def final_stage(path):
    lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    stages, current = [], []
    for line in lines:
        word = line.split(" ", 1)[0].upper()
        if word == "FROM":
            current = []
            stages.append(current)
        if word in RUNTIME:
            current.append(" ".join(line.split()))
    return stages[-1] if stages else []


def check_images(binary):
    scratch = final_stage(DEPLOY / "image/Dockerfile.scratch")
    multi = final_stage(DEPLOY / "Dockerfile")
    check(scratch and scratch == multi, f"Dockerfiles differ at runtime:\n  {scratch}\n  {multi}")
    code, cfg, err = load_config(binary, ["run", "--config", str(DEPLOY / "image/node.toml")], {})
    check(code == 0 and cfg is not None, f"the image's node.toml is refused: {err}")
    print("images: both Dockerfiles share runtime settings; the image's node.toml loads")


# ---------------------------------------------------------------- monitoring

def check_monitoring():
    """Both files parse and every rule is complete; which metrics they name
    is checked against a running node by tests/tests/dashboards.rs."""
    mon = DEPLOY / "monitoring"
    rules = yaml.safe_load((mon / "alerts.yml").read_text())
    names = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert", "?")
            names.append(name)
            check(isinstance(rule.get("expr"), str) and rule["expr"].strip(), f"alerts.yml {name}: no expr")
            check(rule.get("labels", {}).get("severity") in ("critical", "warning"), f"alerts.yml {name}: severity")
            check(bool(rule.get("annotations", {}).get("summary")), f"alerts.yml {name}: no summary")
    check(len(names) == len(set(names)) and names, f"alerts.yml: alert names {names}")
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "rules", str(mon / "alerts.yml")],
                             capture_output=True, text=True, timeout=60)
        check(out.returncode == 0, f"promtool check rules: {out.stdout}{out.stderr}")
    dash = json.loads((mon / "purgecast.json").read_text())
    check([i["name"] for i in dash.get("__inputs", [])] == ["DS_PROMETHEUS"], "dashboard: the DS_PROMETHEUS input")
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    check(targets and all(t.get("expr") for t in targets), "dashboard: a panel target without expr")
    ids = [p["id"] for p in dash["panels"]]
    check(len(ids) == len(set(ids)), "dashboard: panel ids repeat")
    print(f"monitoring: {len(names)} alert rules, {len(dash['panels'])} dashboard panels"
          + ("" if shutil.which("promtool") else " (no promtool: rules not compiled)"))


# ---------------------------------------------------------------- docs/config.md

def toml_repr(v):
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_repr(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def check_config_doc(binary, tmp):
    doc = (DEPLOY.parent / "docs/config.md").read_text()
    rows = {m.group(1): [c.strip() for c in m.group(2).split(" | ")]
            for m in re.finditer(r"^\| `([a-z_.]+)` \| (.+) \|$", doc, re.M)}
    tls = ["--tls-ca=c", "--tls-cert=c", "--tls-key=k"]
    code, defaults, err = load_config(binary, ["run", *tls], {})
    if not check(code == 0 and defaults, f"defaults do not load: {err}"):
        return
    flat = {}
    for k, v in defaults.items():
        for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)]):
            flat[f"{k}.{kk}" if kk else k] = vv
    for key, value in flat.items():
        row = rows.get(key)
        if not check(row is not None, f"docs/config.md does not document `{key}`"):
            continue
        if not key.startswith("tls."):
            # The default may be followed by a gloss: `1073741824` (1 GiB).
            shown = f"`{toml_repr(value)}`"
            check(row[0] == shown or row[0].startswith(shown + " "),
                  f"docs/config.md: default of {key} is {row[0]}, the binary says {toml_repr(value)}")
    help_text = subprocess.run([binary, "run", "--help"], capture_output=True, text=True, timeout=30).stdout
    for key, row in rows.items():
        env = re.findall(r"`(PURGECAST_[A-Z_]+)`", " ".join(row[1:2]))
        for var in env:
            check(f"env: {var}" in help_text, f"docs/config.md: {key} names {var}, unknown to purgecast run --help")
    # The full example file must load and equal the defaults.
    block = re.search(r"## A full file.*?```toml\n(.*?)```", doc, re.S)
    if check(block is not None, "docs/config.md: no full example file"):
        (tmp / "full.toml").write_text(block.group(1))
        code, full, err = load_config(binary, ["run", "--config", str(tmp / "full.toml"), *tls], {})
        check(code == 0 and full == defaults, f"docs/config.md example differs from the defaults: {err}")
    print(f"docs/config.md: {len(flat)} keys and their defaults match the binary")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = str(Path(sys.argv[1]).resolve())
    with tempfile.TemporaryDirectory(prefix="purgecast-manifests.") as tmp:
        check_k8s(binary, Path(tmp))
        check_compose(binary)
        check_images(binary)
        check_monitoring()
        check_config_doc(binary, Path(tmp))
    for f in FAILURES:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
