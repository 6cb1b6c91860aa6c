"""What the fault tests did to runs and what came of it, counted across the whole test session
(its workers too, under `pytest -n`) and printed in pytest's summary by tests/conftest.py."""

FAULTS = {"runs interrupted": 0, "runs recovered": 0, "metric points lost": 0,
          "first runs killed while creating their stores": 0, "disk and permission faults": 0,
          "stop signals honoured": 0, "reporting failures survived": 0, "refused records skipped": 0,
          "runs retrained after ledger drift": 0, "plugins refused for global state": 0}
