#!/usr/bin/env python3
"""The shop's functional test: one checkout, charged exactly once.

Usage: functional_test.py FRONTEND_ADDR PAYMENTS_ADDR   (ip:port each)

Written the way Filibuster asks tests to be written: when fi injected a fault into one
of this test's *own* requests, an error is the correct outcome, and the test says so
instead of failing. It asks fi with the helpers of fi-daemon/testing/python
(`fi_testing`), once, right after the error: the answer is exact at that moment.
"""
import os
import sys

import requests

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fi-daemon", "testing", "python")
)
from fi_testing import faults_injected  # noqa: E402

FRONTEND, PAYMENTS = sys.argv[1], sys.argv[2]
ORDER = "{}-{}-{}".format(
    os.environ.get("FI_EXPLORATION_ID", "0"), os.environ.get("FI_EXECUTION", "0"), os.getpid()
)


def fault_on_my_request(destination):
    """Whether fi injected a fault into a request of this test to `destination`."""
    for fault in faults_injected():
        if fault["source"] == "test" and fault["destination"] == destination:
            print("fi injected {} on my request to {}: an error is expected".format(
                fault["fault"], destination))
            return True
    return False


def call(method, destination, path):
    """The response, or None when the error is explained by a fault on this request."""
    try:
        response = requests.request(method, "http://{}{}".format(destination, path), timeout=5)
    except requests.RequestException as error:
        if fault_on_my_request(destination):
            return None
        sys.exit("FAIL: {} {}: {}".format(method, path, error))
    if response.status_code != 200:
        if fault_on_my_request(destination):
            return None
        sys.exit("FAIL: {} {} answered {}: {}".format(
            method, path, response.status_code, response.text.strip()))
    return response


checkout = call("POST", FRONTEND, "/checkout?order=" + ORDER)
if checkout is None:
    sys.exit(0)
print("checkout:", checkout.text.strip())
charges = call("GET", PAYMENTS, "/processed?order=" + ORDER)
if charges is None:
    sys.exit(0)
if charges.text.strip() != "1":
    sys.exit("FAIL: order {} was charged {} times (expected exactly once)".format(
        ORDER, charges.text.strip()))
print("PASS: order {} charged once".format(ORDER))
