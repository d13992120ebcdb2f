"""The benchmark process of BENCHMARKS.md on SpiffWorkflow, one instance at a time after a
warm-up. Usage: python bench.py N (in a virtual environment with requirements.txt installed).
Prints one JSON line: engine, n, per_sec, p50_us, p99_us.

The BPMN file is parsed once, as Ciclo parses a process once at deploy; each instance is a new
BpmnWorkflow of the same spec, run to its end with do_engine_steps()."""

import json
import pathlib
import sys
import time
from importlib.metadata import version

from lxml import etree
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.parser import BpmnParser
from SpiffWorkflow.util.task import TaskState


def main() -> int:
    try:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
        if n < 1:
            raise ValueError
    except ValueError:
        print(f"bench.py: N must be a whole number above 0, not {sys.argv[1]}", file=sys.stderr)
        return 2
    source = pathlib.Path(__file__).with_name("score.bpmn").read_bytes()
    parser = BpmnParser()
    parser.add_bpmn_xml(etree.fromstring(source), filename="score.bpmn")
    spec = parser.get_spec("score")

    def one() -> None:
        workflow = BpmnWorkflow(spec)
        for task in workflow.get_tasks(state=TaskState.READY):
            task.set_data(amount=500)
        workflow.do_engine_steps()
        data = workflow.data
        if not workflow.is_completed() or data.get("score") != 1000 or data.get("approved") is not True:
            raise SystemExit(f"wrong result: completed={workflow.is_completed()} data={data}")

    for _ in range(min(n, 500)):
        one()
    latencies = []
    began = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        one()
        latencies.append((time.perf_counter() - start) * 1e6)
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))]

    python = ".".join(map(str, sys.version_info[:3]))
    print(json.dumps({
        "engine": f"SpiffWorkflow {version('SpiffWorkflow')} (Python {python})",
        "n": n, "per_sec": n / elapsed, "p50_us": pick(0.5), "p99_us": pick(0.99),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
