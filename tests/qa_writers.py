"""A QA writer process for the sharing tests: ``python tests/qa_writers.py WORKSPACE NAME N``.

Opens the workspace's QA store, records N decisions (reading the current decisions every tenth
one, as the window does) and prints one JSON line: the ids it was told were saved, how many
decisions failed and the first error. With ``--stream`` it prints each id as soon as its
decision returned, for kill -9 tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.errors import CrownscanError  # noqa: E402
from app.core.qa_store import Decision, QaRecord, QaStore  # noqa: E402


def main(argv: list[str]) -> int:
    stream = "--stream" in argv
    workspace, name, n = [a for a in argv if a != "--stream"]
    try:
        store = QaStore(workspace)
    except CrownscanError as exc:
        print(json.dumps({"ids": [], "failed": int(n), "error": f"open: {exc}"}), flush=True)
        return 1
    ids: list[int] = []
    errors: list[str] = []
    for i in range(int(n)):
        try:
            rec = store.record_decision(QaRecord(f"{name}-{i}", Decision.APPROVED, note=name))
            if i % 10 == 0:
                store.latest_decisions()
        except CrownscanError as exc:
            errors.append(str(exc))
            continue
        ids.append(int(rec.id or 0))
        if stream:
            print(rec.id, flush=True)
    store.close()
    first = errors[0] if errors else None
    print(json.dumps({"ids": ids, "failed": len(errors), "error": first}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
