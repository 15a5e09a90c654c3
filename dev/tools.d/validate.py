"""Validates rendered Kubernetes manifests offline: built-in kinds against Kubernetes' own
schemas (kubernetes-validate, strict: unknown fields are errors), custom resources against
the schemas in the folder given (dev/tools' crds/). Exits 1 on any failure, naming it.

    python validate.py CRD_DIR MANIFESTS.yaml
"""
import glob
import json
import sys

import jsonschema
import kubernetes_validate
import yaml

crd_dir, path = sys.argv[1], sys.argv[2]
custom = {}
for f in glob.glob(f"{crd_dir}/*.json"):
    schema = json.load(open(f))
    custom[(schema["x-api-version"], schema["x-kind"])] = schema

failures, checked = [], 0
for doc in yaml.safe_load_all(open(path)):
    if not doc:
        continue
    key = (doc.get("apiVersion"), doc.get("kind"))
    name = f'{key[1]} {doc.get("metadata", {}).get("name")}'
    checked += 1
    try:
        if key in custom:
            jsonschema.validate(doc, custom[key])
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        print(f"valid: {name}")
    except Exception as e:  # every failure is reported, then the exit code says it
        error = getattr(e, "caught", e)
        where = "/".join(str(p) for p in getattr(error, "absolute_path", []))
        message = getattr(error, "message", str(error)).splitlines()[0]
        failures.append(f"{name}: at {where or '/'}: {message}")
for f in failures:
    print(f"INVALID: {f}", file=sys.stderr)
print(f"{checked} manifests, {len(failures)} invalid")
sys.exit(1 if failures or checked == 0 else 0)
