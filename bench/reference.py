#!/usr/bin/env python3
"""The original Python design of the service-discovery updater, as its
README describes it, for the benchmark to compare against: fetch the
inventory with retries and exponential backoff (urllib), check that it is
a list of sensor names, build one target group, json.dump it with indent=2
to a temp file next to the target and os.replace it over the target.

Standard library only. `--once` runs one cycle and exits 0 or 1; without
it the script loops every UPDATE_INTERVAL seconds as the original did.
"""

import json
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

INVENTORY_URL = os.environ.get("INVENTORY_URL", "http://inventory_server:1337/inventory")
UPDATE_INTERVAL = int(os.environ.get("UPDATE_INTERVAL", "30"))
TARGETS_FILE = os.environ.get("TARGETS_FILE", "/shared/targets.json")
METRICS_PORT = int(os.environ.get("METRICS_PORT", "9100"))
METRICS_PATH = os.environ.get("METRICS_PATH", "/metrics")
RETRIES = 3
BACKOFF = 1.0
TIMEOUT = 10

logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    datefmt="%Y-%m-%d %H:%M:%S",
)
log = logging.getLogger(__name__)


def fetch_sensor_inventory():
    """The sensor list, or None after the retries ran out."""
    log.info("Fetching sensor inventory...")
    for attempt in range(RETRIES + 1):
        try:
            req = urllib.request.Request(INVENTORY_URL, headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                sensors = json.load(resp)
            if not isinstance(sensors, list):
                log.error("Invalid inventory format: expected a list")
                return None
            log.info("Successfully fetched %d sensors", len(sensors))
            return sensors
        except (urllib.error.URLError, OSError, ValueError) as e:
            if attempt == RETRIES:
                log.error("Failed to fetch inventory: %s", e)
                return None
            delay = BACKOFF * (2**attempt)
            log.warning("Fetch failed (%s); retrying in %.1fs", e, delay)
            time.sleep(delay)
    return None


def create_prometheus_targets(sensors):
    """One target group: every sensor name with the metrics port."""
    targets = [f"{s}:{METRICS_PORT}" for s in sensors if isinstance(s, str) and s.strip()]
    return [
        {
            "targets": targets,
            "labels": {
                "__metrics_path__": METRICS_PATH,
                "job": "sensors",
                "environment": "production",
            },
        }
    ]


def write_targets_file(targets):
    """Atomic write: a temp file in the same directory, then os.replace."""
    directory = os.path.dirname(os.path.abspath(TARGETS_FILE))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".targets.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(targets, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, TARGETS_FILE)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    log.info("Successfully updated targets file: %s", TARGETS_FILE)


def update_service_discovery():
    sensors = fetch_sensor_inventory()
    if sensors is None:
        return False
    try:
        write_targets_file(create_prometheus_targets(sensors))
    except OSError as e:
        log.error("Failed to write targets file: %s", e)
        return False
    return True


def main():
    if "--once" in sys.argv[1:]:
        return 0 if update_service_discovery() else 1
    log.info("Starting Prometheus Service Discovery Updater")
    while True:
        update_service_discovery()
        time.sleep(UPDATE_INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
