"""Validate docker-compose.yml without a Docker engine.

1. Against the Compose specification's JSON schema, as published on PyPI inside the
   docker-compose package (compose/config/compose_spec.json).
2. Against what the demo promises: an `aggregator` and a `publisher` service from one
   image, port 8000 published, ./data mounted at /app/data, DB_PATH / API_PORT /
   DUP_RATE in the environment, the publisher waiting for the aggregator's health.

Usage: python scripts/check_compose.py docker-compose.yml
"""

import glob
import json
import subprocess
import sys
import tempfile
import zipfile

import jsonschema
import yaml


def compose_schema() -> dict:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d, "docker-compose==1.29.2"],
            check=True,
        )
        wheel = glob.glob(f"{d}/*.whl")[0]
        return json.loads(zipfile.ZipFile(wheel).read("compose/config/compose_spec.json"))


def check_demo(doc: dict) -> None:
    services = doc["services"]
    agg, pub = services["aggregator"], services["publisher"]
    assert "8000:8000" in agg["ports"], "port 8000 published"
    assert "./data:/app/data" in agg["volumes"], "./data volume"
    assert {"DB_PATH", "API_PORT"} <= set(agg["environment"]), "DB_PATH and API_PORT"
    assert "DUP_RATE" in pub["environment"], "DUP_RATE"
    assert pub["environment"]["AGGREGATOR_URL"].startswith("http://aggregator:"), "publisher targets the service"
    assert pub["depends_on"]["aggregator"]["condition"] == "service_healthy", "publisher waits for health"
    assert agg["healthcheck"]["test"] == ["CMD", "aggregator", "healthcheck"], "healthcheck via the binary"
    assert pub["image"] == agg["image"], "one image for both services"


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"
    with open(path) as f:
        doc = yaml.safe_load(f)
    jsonschema.validate(doc, compose_schema())
    check_demo(doc)
    print(f"{path}: valid against the Compose specification; demo services as documented")


if __name__ == "__main__":
    main()
