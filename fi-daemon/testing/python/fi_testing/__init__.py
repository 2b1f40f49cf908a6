"""fi's helpers for the functional tests that `fictl explore run` runs.

Filibuster's names, so that a test written for it runs with one import changed:

    from fi_testing import was_fault_injected, was_fault_injected_on

    try:
        answer = requests.get(url, timeout=5)
    except requests.RequestException:
        if was_fault_injected_on("payments"):
            ...  # the error is what fi asked for: the test says so instead of failing

Each answer is exact at the moment of the call: the daemon reads what the kernel wrote
before it answers, and a fault is written before the client sees it. No polling.
Services are named as in fi's reports (by their target labels). Outside an exploration
(no FI_EXPLORATION_ID), nothing was injected.
"""
import json
import os
import subprocess

__all__ = [
    "faults_injected",
    "was_fault_injected",
    "was_fault_injected_on",
    "was_fault_injected_on_method",
]


def faults_injected():
    """The faults fi injected so far in this execution: dicts with `rule`, `source`,
    `destination` (ip:port), `service` (or None), `method`, `path` and `fault`."""
    if not os.environ.get("FI_EXPLORATION_ID"):
        return []
    fictl = os.environ.get("FI_FICTL", "fictl")
    out = subprocess.run(
        [fictl, "--json", "explore", "injected"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout).get("faults", [])


def was_fault_injected():
    """Whether fi injected any fault in this execution so far."""
    return bool(faults_injected())


def was_fault_injected_on(service):
    """Whether fi injected a fault into a request to `service` (its name in fi's report,
    or its ip:port)."""
    return any(
        f.get("service") == service or f.get("destination") == service
        for f in faults_injected()
    )


def was_fault_injected_on_method(service, method):
    """Whether fi injected a fault into a `method` request (GET, POST...) to `service`."""
    return any(
        (f.get("service") == service or f.get("destination") == service)
        and f.get("method") == method
        for f in faults_injected()
    )
