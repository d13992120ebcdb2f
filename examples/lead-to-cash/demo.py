#!/usr/bin/env python3
"""The whole lead-to-cash cycle in accelerated time, on a fresh data folder.

Starts the fake ERP and `ciclo serve` with the shipped processes and a clock that runs two
days per second (--clock-speed), imports the lead file with placeholder addresses under
example.com, then a scripted sales team and scripted customers act through the HTTP API:
salespeople qualify and convert hot leads, configure and price quotes (some with discounts
that need approval), managers approve or reject, customers accept quotes, orders go to the
ERP, invoices are written as e-invoices, customers pay (most on time, some late, one
partially, one disputes its invoice), dunning letters go to the outbox. Prints each stage.

Usage: python3 examples/lead-to-cash/demo.py [--leads FILE] [--ciclo PATH] [--data DIR]
       [--speed SECONDS_PER_SECOND] [--seconds LIMIT] [--seed N]
Python 3 standard library only. Build first: cargo build --release.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
START_DAY = "2025-01-06"

# Billing details the customers give when they accept a quote: an Italian business (FatturaPA)
# and a German one (UBL), as the e-invoicing checks require them.
CUSTOMERS = [
    {"name": "Verdi Costruzioni S.r.l.", "kind": "business", "locale": "it",
     "vat_id": "IT02345678901", "sdi_code": "ABC1234",
     "address": {"street": "Via Garibaldi 3", "city": "Bologna", "postal_code": "40121",
                 "province": "BO", "country": "IT"}},
    {"name": "Schmidt GmbH", "kind": "business", "locale": "en", "vat_id": "DE123456789",
     "address": {"street": "Hauptstrasse 1", "city": "Berlin", "postal_code": "10115",
                 "country": "DE"}},
]
PRODUCTS = [("WIDGET-STD", 20, 80), ("WIDGET-BAND", 10, 60), ("PALLET", 1, 5)]


def say(text=""):
    print(text, flush=True)


def fail(text):
    print(f"demo: {text}", file=sys.stderr, flush=True)
    sys.exit(1)


class Api:
    def __init__(self, url, token):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method, path, body=None, ok=(200, 201, 202, 204)):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                text = answer.read().decode()
                return answer.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            if e.code in ok:
                return e.code, None
            return e.code, (json.loads(text) if text.startswith("{") else text)

    def all(self, path):
        """Every item of a paged list."""
        items, cursor = [], None
        while True:
            sep = "&" if "?" in path else "?"
            page = path + f"{sep}limit=500" + (f"&cursor={cursor}" if cursor else "")
            status, body = self.call("GET", page)
            if status != 200:
                fail(f"GET {page}: {status} {body}")
            items += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return items

    def message(self, name, key, variables=None):
        status, body = self.call(
            "POST", "/api/messages",
            {"name": name, "key": key, "variables": variables or {}, "ttl": "PT1H"})
        if status not in (200, 201, 202):
            fail(f"message {name} {key}: {status} {body}")
        return body


def start(command, what, log, env=None):
    """Starts a program that prints `listening on URL`; returns (process, url). Its log
    (standard error) goes to `log`."""
    with open(log, "w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   env=dict(os.environ, **(env or {})))
    deadline = time.time() + 60
    for line in process.stdout:
        if line.startswith("listening on "):
            # Keep reading its output so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, line.split("listening on ", 1)[1].strip()
        if time.time() > deadline:
            break
    process.kill()
    fail(f"{what} did not start: {' '.join(command)}\n{pathlib.Path(log).read_text()[-2000:]}")


def find_ciclo(given):
    if given:
        return pathlib.Path(given)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        path = target / profile / "ciclo"
        if path.exists():
            return path
    fail("no ciclo binary: run `cargo build --release` first, or give --ciclo PATH")


def find_leads(given):
    if given:
        return pathlib.Path(given), "given"
    for candidate in (os.environ.get("CICLO_LEADS_CSV"),
                      REPO.parent / "shared" / "data" / "leads" / "Leads.csv"):
        if candidate and pathlib.Path(candidate).exists():
            return pathlib.Path(candidate), "the X Education export"
    return REPO / "tests" / "data" / "leads-sample.csv", (
        "the small sample of the repository (the real file was not found at "
        "../shared/data/leads/Leads.csv or $CICLO_LEADS_CSV)")


class World:
    """The scripted people. Each open task is answered by the rule for its step."""

    def __init__(self, api, rng):
        self.api, self.rng = api, rng
        self.done_tasks = set()
        self.seen = {}
        self.accepted = set()
        self.paid = {}
        self.counts = {}
        self.disputed = None
        self.partial = None
        self.late = set()

    def count(self, what, n=1):
        self.counts[what] = self.counts.get(what, 0) + n

    def answer(self, task, form):
        """Form values for `task`, or None to leave it open for now."""
        step, definition = task["step"], task["definition"]
        names = {f["name"]: f for f in form}
        key = (task["instance"], task["task"])
        first_seen = self.seen.setdefault(key, time.time())
        if definition == "lead-assignment" and "decision" in names:
            convert = self.counts.get("leads converted", 0) < 12 and self.rng.random() < 0.5
            self.count("leads converted" if convert else "leads disqualified")
            if convert:
                return {"decision": "convert"}
            return {"decision": "disqualify", "reason": "no budget this year"}
        if definition == "lead-nurture" and step == "phone-call":
            self.count("calls made")
            return {"result": self.rng.choice(["interested", "not_interested", "no_answer"])}
        if definition == "opportunity-to-quote":
            if step == "configure":
                product, low, high = self.rng.choice(PRODUCTS)
                n = self.counts.get("quotes configured", 0)
                self.count("quotes configured")
                # Every third quote asks for a discount over the manager's threshold.
                discount = 0.15 if n % 3 == 0 else 0
                return {"product": product, "qty": self.rng.randint(low, high),
                        "discount": discount}
            if step == "qualify":
                return {"close_date": "2025-06-30", "budget_confirmed": self.rng.random() < 0.9}
            if "decision" in names:
                options = names["decision"].get("options", [])
                return {"decision": "withdraw" if "withdraw" in options else options[-1]}
            if step == "request-samples":
                return {"samples": "none"}
        if definition == "quote-approval":
            if "decision" in names:
                approve = self.rng.random() < 0.75
                self.count("approvals given" if approve else "quotes rejected")
                return {"decision": "approve" if approve else "reject",
                        "comment": "ok" if approve else "too much discount"}
            if "quote_discount" in names:
                self.count("quotes revised")
                return {"quote_discount": 0}
        if definition == "quote-to-order" and "decision" in names:
            options = names["decision"].get("options", [])
            for choice in ("approve", "book-anyway", "cancel"):
                if choice in options:
                    return {"decision": choice}
        if definition == "customer-care":
            # The case is answered after about two weeks of process time.
            if time.time() - first_seen < 14 / self.speed_days:
                return None
            self.count("care cases resolved")
            return {"resolution": "credit note not needed: the delivery was complete"}
        if definition == "dunning":
            # Every letter was sent and it is still not paid: to the collection agency.
            self.count("invoices handed to collection")
            return {"decision": "collection_agency"} if "decision" in names else None
        if definition == "order-to-cash":
            return {"fixed": False} if "fixed" in names else None
        # Anything else: fill the form plainly.
        values = {}
        for f in form:
            if f["type"] == "choice":
                values[f["name"]] = f["options"][0]
            elif f["type"] == "boolean":
                values[f["name"]] = True
            elif f["type"] == "number":
                values[f["name"]] = float(f.get("min") or 1)
            elif f["type"] == "date":
                values[f["name"]] = "2025-06-30"
            elif f["required"]:
                values[f["name"]] = "done"
        return values

    def work_tasks(self):
        for task in self.api.all("/api/tasks"):
            key = (task["instance"], task["task"])
            if key in self.done_tasks:
                continue
            status, full = self.api.call("GET", f"/api/tasks/{task['instance']}/{task['task']}")
            if status != 200:
                continue
            values = self.answer(task, full.get("form") or [])
            if values is None:
                continue
            status, body = self.api.call(
                "POST", f"/api/tasks/{task['instance']}/{task['task']}/complete",
                {"values": values})
            if status == 204:
                self.done_tasks.add(key)
                self.count("tasks completed")
            elif status != 404:
                fail(f"completing `{task['title']}` ({task['definition']}/{task['step']}) "
                     f"with {values}: {status} {body}")

    def customers_act(self):
        # Customers accept most quotes that were sent, with their billing details.
        for inst in self.api.all("/api/instances?definition=quote-to-order&state=active"):
            if inst["id"] in self.accepted:
                continue
            status, full = self.api.call("GET", f"/api/instances/{inst['id']}")
            quote = (full or {}).get("variables", {}).get("quote") or {}
            number = quote.get("number")
            if not number:
                continue
            self.accepted.add(inst["id"])
            if self.rng.random() < 0.85:
                customer = dict(self.rng.choice(CUSTOMERS))
                customer["email"] = (quote.get("customer") or {}).get("email") \
                    or "ap@customer.example.com"
                self.api.message("quote-accepted", number, {"billing": customer})
                self.count("quotes accepted")
            else:
                self.count("quotes left to expire")
        # Customers pay their invoices: most on time, some late, one partially, one disputes.
        for inst in self.api.all("/api/instances?definition=dunning&state=active"):
            if inst["id"] in self.paid:
                continue
            status, full = self.api.call("GET", f"/api/instances/{inst['id']}")
            invoice = (full or {}).get("variables", {}).get("invoice") or {}
            number, total = invoice.get("number"), invoice.get("total")
            if not number or total is None:
                continue
            if self.disputed is None:
                self.disputed = number
                self.paid[inst["id"]] = "disputed"
                self.api.message("case-opened", f"case-{number}", {"case": {
                    "id": f"CASE-{number}", "subject": f"Invoice {number}: goods not received",
                    "severity": "normal", "customer": {"tier": "standard"},
                    "invoice_number": number}})
                self.count("invoices disputed")
                continue
            if self.partial is None:
                self.partial = number
                self.paid[inst["id"]] = "partial"
                half = round(float(total) / 2, 2)
                self.api.message("payment-received", number,
                                 {"payment": {"amount": half}})
                self.count("invoices paid partially")
                continue
            # Every third of the others pays late (after its second letter), the rest on time.
            self.invoices = getattr(self, "invoices", 0) + 1
            if self.invoices % 3 == 2:
                self.late.add(inst["id"])
                self.paid[inst["id"]] = "late"
                self.count("invoices left to be paid late")
                continue
            self.paid[inst["id"]] = "on time"
            self.api.message("payment-received", number, {"payment": {"amount": total}})
            self.count("invoices paid on time")

    STORIES = ("late invoices paid after two letters", "care cases resolved",
               "invoices paid partially", "invoices paid on time")

    def missing(self):
        """The stories of the demo that have not happened yet."""
        return [s for s in self.STORIES if self.counts.get(s, 0) == 0]

    def late_payers_pay(self):
        """A late payer pays after its second letter."""
        for inst_id in list(self.late):
            status, full = self.api.call("GET", f"/api/instances/{inst_id}")
            variables = (full or {}).get("variables", {})
            if (full or {}).get("state") != "active":
                self.late.discard(inst_id)
                continue
            if int(variables.get("level", 0) or 0) >= 2:
                invoice = variables.get("invoice") or {}
                self.api.message("payment-received", invoice["number"],
                                 {"payment": {"amount": variables.get("balance")}})
                self.late.discard(inst_id)
                self.count("late invoices paid after two letters")


def files(folder, suffix):
    return sorted(p for p in pathlib.Path(folder).rglob(f"*{suffix}")) \
        if pathlib.Path(folder).exists() else []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", help="the lead export (CSV)")
    parser.add_argument("--ciclo", help="the ciclo binary (default: target/release/ciclo)")
    parser.add_argument("--data", help="a new data folder (default: a temporary one, kept)")
    parser.add_argument("--speed", type=float, default=172800,
                        help="process seconds per real second (default 172800: two days)")
    parser.add_argument("--seconds", type=float, default=115,
                        help="the longest the demo may take, real seconds")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    began = time.time()

    ciclo = find_ciclo(args.ciclo)
    leads, which = find_leads(args.leads)
    if not leads.exists():
        fail(f"the lead file {leads} does not exist")
    data = pathlib.Path(args.data) if args.data else pathlib.Path(
        tempfile.mkdtemp(prefix="ciclo-demo-"))
    if data.exists() and any(data.iterdir()):
        fail(f"{data} is not empty: the demo needs a fresh data folder")
    data.mkdir(parents=True, exist_ok=True)
    say(f"Ciclo lead-to-cash demo: {ciclo}, data in {data}")
    say(f"leads: {leads} ({which})")

    erp, erp_url = start([str(ciclo), "fake-erp", "--listen", "127.0.0.1:0"], "the fake ERP",
                         data / "fake-erp.log")
    running = [erp]
    try:
        run(args, ciclo, leads, data, erp_url, running, began)
    finally:
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def run(args, ciclo, leads, data, erp_url, running, began):
    config = data / "ciclo.toml"
    config.write_text(
        f'erp_url = "{erp_url}"\nmail_from = "Sales <sales@example.com>"\n'
        "[[users]]\nname = \"anna\"\ngroups = [\"sales\", \"inside-sales\"]\n"
        "[[users]]\nname = \"marco\"\ngroups = [\"sales\", \"sales-managers\"]\n"
        "[[users]]\nname = \"sofia\"\ngroups = [\"sales\", \"sales-directors\", \"order-desk\"]\n")
    server, url = start([str(ciclo), "serve", "--listen", "127.0.0.1:0", "--data", str(data),
                         "--processes", str(REPO / "processes"), "--config", str(config),
                         "--clock-speed", str(args.speed), "--clock-start", START_DAY],
                        "ciclo serve", data / "server.log",
                        # The ERP mapping sends this token; the fake ERP accepts any.
                        {"CICLO_SECRET_ERP_TOKEN": "demo-token", "CICLO_LOG": "warn"})
    running.insert(0, server)
    token = (data / "admin-token").read_text().strip()
    api = Api(url, token)
    rng = random.Random(args.seed)
    world = World(api, rng)
    world.speed_days = args.speed / 86400
    say(f"\n1. Leads: importing into {url} (a day passes every "
        f"{86400 / args.speed:.1f} s)")
    t = time.time()
    done = subprocess.run(
        [str(ciclo), "import", "leads", str(leads), "--mapping",
         str(REPO / "processes" / "imports" / "x-education.yaml"), "--server", url,
         "--token", token, "--placeholder-email", "example.com", "--json",
         "--settle-seconds", "5"],
        capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"the import failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    say(f"   {summary['rows']} rows in {time.time() - t:.1f} s: {summary['imported']} "
        f"imported, {summary['duplicates']} duplicates, {summary['rejected']} rejected; "
        f"hot {summary['hot']}, warm {summary['warm']}, cold {summary['cold']}; "
        f"{summary['suppressed_emails']} Do Not Email")
    say(f"   assigned: {summary.get('assigned')}")

    say("\n2. The sales team and the customers act")
    deadline = began + args.seconds
    last_report = 0
    while world.missing():
        if time.time() > deadline:
            fail(f"the cycle did not complete in {args.seconds:.0f} s: still waiting for "
                 + ", ".join(world.missing()))
        world.work_tasks()
        world.customers_act()
        world.late_payers_pay()
        incidents = api.all("/api/incidents")
        if incidents:
            first = incidents[0]
            fail(f"an incident: {json.dumps(first)[:800]}")
        if time.time() - last_report > 10:
            last_report = time.time()
            elapsed = time.time() - began
            say(f"   {elapsed:5.0f} s: " + ", ".join(
                f"{k} {v}" for k, v in sorted(world.counts.items())))
        time.sleep(0.2)

    say("\n3. What happened")
    _, orders = erp_orders(erp_url)
    outbox = files(data / "outbox", ".eml")
    subjects = {}
    for mail in outbox:
        for line in mail.read_text(errors="replace").splitlines():
            if line.startswith("Subject: "):
                subject = line[9:].split(":")[0][:40]
                subjects[subject] = subjects.get(subject, 0) + 1
                break
    einvoices = files(data / "einvoices", ".xml")
    for name, value in sorted(world.counts.items()):
        say(f"   {name}: {value}")
    say(f"   orders in the ERP: {len(orders)}")
    say(f"   e-invoices written: {len(einvoices)} in {data / 'einvoices'}")
    say(f"   e-mails in the outbox: {len(outbox)} in {data / 'outbox'}")
    for subject, n in sorted(subjects.items(), key=lambda x: -x[1])[:12]:
        say(f"     {n:6d}  {subject}")
    say(f"\nfinished in {time.time() - began:.0f} s")


def erp_orders(url):
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/orders", timeout=10) as answer:
            body = json.loads(answer.read().decode())
            return 200, body if isinstance(body, list) else body.get("orders", [])
    except (urllib.error.URLError, ValueError) as e:
        return 0, []


if __name__ == "__main__":
    main()
