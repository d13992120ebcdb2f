#!/usr/bin/env python3
"""An external worker for Ciclo, in Python with the standard library only.

It takes jobs of one type (default `score-lead`) from a Ciclo server, computes a lead's
score and completes the job with `{"score": N}`. A lead without a usable e-mail address is a
business error (`BAD_LEAD`, caught by the process's `on: - error: BAD_LEAD`); any other
exception fails the job with retries left, so Ciclo retries it later and raises an incident
when none are left. Fetches long-poll (the server holds the request until a job appears), and
a background thread extends the lease while a job takes long.

    CICLO_URL=http://127.0.0.1:8080 CICLO_TOKEN=ciclo_... python3 worker.py

Options (or environment): --url (CICLO_URL), --token (CICLO_TOKEN), --type (CICLO_JOB_TYPE),
--worker (CICLO_WORKER, default scorer-<pid>), --lease-ms, --work-seconds (pretend slow work).
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

FREE_MAIL = {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "libero.it"}


class BadLead(Exception):
    """The lead cannot be scored: a business error, not a technical failure."""


class LeaseLost(Exception):
    """Ciclo refused the lease (409): the job may be someone else's now."""


class Ciclo:
    def __init__(self, url, token, worker):
        self.url = url.rstrip("/")
        self.token = token
        self.worker = worker

    def post(self, path, body, timeout=60):
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={
                "Authorization": "Bearer " + self.token,
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                text = answer.read().decode("utf-8")
                return json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            if error.code == 409:
                raise LeaseLost(detail) from None
            raise RuntimeError("%s %s: %s" % (path, error.code, detail)) from None

    def fetch(self, job_type, lease_ms, wait_ms):
        body = {
            "worker": self.worker,
            "types": [job_type],
            "max_jobs": 1,
            "lease_ms": lease_ms,
            "wait_ms": wait_ms,
        }
        return self.post("/api/external-jobs/fetch-and-lock", body, timeout=wait_ms / 1000 + 30)

    def answer(self, job, what, body):
        body = dict(body, worker=self.worker, lease_token=job["lease_token"])
        return self.post("/api/external-jobs/%s/%s" % (job["id"], what), body)


def score(lead):
    """The lead's score from 0 to 100."""
    if not isinstance(lead, dict):
        raise BadLead("the job has no `lead` object")
    email = lead.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise BadLead("the lead has no usable e-mail address")
    points = 10
    domain = email.rsplit("@", 1)[1].lower()
    if domain not in FREE_MAIL:
        points += 30
    if lead.get("company"):
        points += 20
    employees = lead.get("employees") or 0
    points += min(int(employees), 400) // 10
    return min(points, 100)


class Heartbeat(threading.Thread):
    """Extends a job's lease every half lease while the work goes on."""

    def __init__(self, ciclo, job, lease_ms):
        super().__init__(daemon=True)
        self.ciclo, self.job, self.lease_ms = ciclo, job, lease_ms
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.lease_ms / 2000):
            try:
                self.ciclo.answer(self.job, "extend", {"lease_ms": self.lease_ms})
            except Exception as error:  # the answer will tell; keep working
                log("could not extend the lease of %s: %s" % (self.job["id"], error))


def handle(ciclo, job, lease_ms, work_seconds):
    beat = Heartbeat(ciclo, job, lease_ms)
    beat.start()
    try:
        time.sleep(work_seconds)
        result = score(job["variables"].get("lead"))
        beat.done.set()
        ciclo.answer(job, "complete", {"variables": {"score": result}})
        log("job %s: score %d" % (job["id"], result))
    except BadLead as error:
        beat.done.set()
        ciclo.answer(job, "error", {"code": "BAD_LEAD", "message": str(error)})
        log("job %s: BAD_LEAD: %s" % (job["id"], error))
    except LeaseLost as error:
        log("job %s: lease lost, another worker may have it: %s" % (job["id"], error))
    except Exception as error:
        beat.done.set()
        retries = max(job["retries_left"], 0)
        ciclo.answer(
            job, "fail", {"message": repr(error), "retries_left": retries, "retry_in_ms": 10000}
        )
        log("job %s failed (%d retries left): %r" % (job["id"], retries, error))
    finally:
        beat.done.set()


def log(text):
    print(time.strftime("%H:%M:%S"), text, flush=True)


def main():
    parser = argparse.ArgumentParser(description="A Ciclo external worker that scores leads.")
    parser.add_argument("--url", default=os.environ.get("CICLO_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("CICLO_TOKEN"))
    parser.add_argument("--type", default=os.environ.get("CICLO_JOB_TYPE", "score-lead"))
    parser.add_argument(
        "--worker", default=os.environ.get("CICLO_WORKER", "scorer-%d" % os.getpid())
    )
    parser.add_argument("--lease-ms", type=int, default=30000)
    parser.add_argument("--wait-ms", type=int, default=20000)
    parser.add_argument("--work-seconds", type=float, default=0.0)
    args = parser.parse_args()
    if not args.token:
        parser.error("give a worker token with --token or CICLO_TOKEN")
    ciclo = Ciclo(args.url, args.token, args.worker)
    log("worker %s takes %s jobs from %s" % (args.worker, args.type, args.url))
    while True:
        try:
            jobs = ciclo.fetch(args.type, args.lease_ms, args.wait_ms)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            log("fetch failed, trying again in a second: %s" % error)
            time.sleep(1)
            continue
        for job in jobs:
            handle(ciclo, job, args.lease_ms, args.work_seconds)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
