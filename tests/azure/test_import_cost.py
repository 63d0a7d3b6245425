"""The Azure ML modules import azure-ai-ml only when used (it costs over a second),
and the online deploy step imports nothing from pipeline/ or triggers/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_loading_the_azure_modules_does_not_import_azure_ai_ml():
    code = (
        "import sys\n"
        "import pipeline.aml_client, pipeline.aml_submitter, pipeline.publish\n"
        "import pipeline.schedules, cli.azure_commands, steps.online_endpoint\n"
        "from pipeline.backends import make_submitter\n"
        "from pipeline.settings import Settings\n"
        "make_submitter(Settings.from_env({'PIPELINE_BACKEND': 'aml'}))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('azure.ai.ml'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_online_deploy_step_imports_no_service_code():
    tree = ast.parse((REPO / "steps" / "online_endpoint.py").read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert not imported & {"pipeline", "triggers", "cli", "function_app"}
