import subprocess
import sys

HEAVY = (
    "torch",
    "transformers",
    "lm_eval",
    "codecarbon",
    "great_expectations",
    "mlflow",
    "plotly",
    "pymoo",
    "prefect",
)


def test_importing_metrics_stays_lean():
    code = (
        "import sys\n"
        "import metrics.types, metrics.pareto, metrics.carbon, metrics.energy, metrics.measure\n"
        "import metrics.validation, metrics.tracking, metrics.report, metrics.table\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
