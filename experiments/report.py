"""Aggregate results JSON into report.md with tables and plots (see ``experiments/reporting``).

    python experiments/report.py experiments/results/cpu --out experiments/results/cpu \
        --title "metaprompt studies, cpu profile" --baselines experiments/results/baselines
    python experiments/report.py runs/a runs/b/results.json --out report/ --no-plots
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reporting/ and studies.py

from reporting import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
