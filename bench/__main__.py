"""``make bench``: speed goals live here, never in timed test assertions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def main() -> int:
    results: dict[str, object] = {}
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"no benchmark yet; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
