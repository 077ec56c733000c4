"""`medfit diagnose RUN`: why the curves look like that — ranked findings with evidence and fixes.

from medfit.diagnose import diagnose_run
diagnosis = diagnose_run("runs/blood")          # also writes runs/blood/diagnosis.json
for f in diagnosis.findings: print(f.severity, f.title, f.fix)
"""

from medfit.diagnose.findings import Diagnosis, Finding
from medfit.diagnose.run import diagnose_run

__all__ = ["Diagnosis", "Finding", "diagnose_run"]
