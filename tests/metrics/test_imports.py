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
        "import ecocompress.metrics.types, ecocompress.metrics.pareto, ecocompress.metrics.carbon\n"
        "import ecocompress.metrics.energy, ecocompress.metrics.measure\n"
        "import ecocompress.metrics.validation, ecocompress.metrics.tracking\n"
        "import ecocompress.metrics.report, ecocompress.metrics.table\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
