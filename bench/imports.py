"""Cold import cost of `function_app` against importing azure.ai.ml eagerly.

Each figure is the median of fresh interpreters (`python -c "import X"`), minus the
bare interpreter start measured the same way, so only the import itself is counted.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _time(code: str, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(repeats: int = 5) -> dict[str, float]:
    bare = _time("pass", repeats)
    app = _time("import function_app", repeats) - bare
    eager = _time("import function_app, azure.ai.ml", repeats) - bare
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, function_app; "
            "print(sorted(m for m in ('azure.ai.ml','lightgbm','pandas','mlflow') "
            "if m in sys.modules))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"== import cost (median of {repeats} fresh interpreters, bare start subtracted)")
    print(f"  python start (bare)                 {bare:6.3f} s")
    print(f"  import function_app                 {app:6.3f} s   (aim: < 0.4 s)")
    print(f"  import function_app + azure.ai.ml   {eager:6.3f} s")
    print(f"  ratio lazy/eager                    {app / eager:6.2f}")
    print(f"  heavy modules loaded by function_app: {heavy}")
    return {"function_app_s": app, "eager_s": eager}


if __name__ == "__main__":
    main()
