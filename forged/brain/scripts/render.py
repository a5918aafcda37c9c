"""Render a standalone processing script from a validated mapping.

The script is the source of rows.py, records.py and main.py pasted together (their imports of one another
removed) plus the mapping as a constant: what the daemon runs and what the user reads are the same rules.
"""

from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

from forged.brain.mapping import ColumnMapping
from forged.brain.scripts.rows import layout_label

_HERE = Path(__file__).resolve().parent
# Order matters: each module may use only names defined in the ones before it.
_MODULES = ("rows.py", "records.py", "main.py")

SCRIPT_NAME = "prepare_script.py"


@functools.cache
def _body(module: str) -> str:
    """The module's code without its docstring, `from __future__` and imports from forged."""
    source = (_HERE / module).read_text(encoding="utf-8")
    lines = source.splitlines()
    drop: set[int] = set()
    tree = ast.parse(source)
    for node in tree.body:
        first = node.lineno - 1
        last = (node.end_lineno or node.lineno) - 1
        is_docstring = (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]
        )
        own_import = isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            "forged",
            "__future__",
        )
        if is_docstring or own_import:
            drop.update(range(first, last + 1))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return "\n".join(kept).strip("\n")


def render(mapping: ColumnMapping, source_name: str) -> str:
    """A script that turns `source_name` into prepared.jsonl with `mapping`; stdlib-only, Python 3.11+."""
    label = layout_label(mapping.model_dump())
    header = f'''#!/usr/bin/env python3
"""Forge processing script for {source_name} (layout {label}).

Written by Forge from its templates: no LLM wrote this code. Standard library only (Python 3.11+), so you can
read it, edit it and re-run it without Forge:

    python {SCRIPT_NAME} --input {source_name} --output OUT_DIR

It reads UTF-8 CSV, TSV, JSON, JSONL or text (Forge converted other encodings, and Parquet to JSONL,
before it ran) and writes OUT_DIR/prepared.jsonl (one {{"messages": [...]}} or {{"text": ...}} record a
line) and OUT_DIR/report.json (rows read, rows dropped and why). Forge then validates the records and
splits them into train and validation sets, keeping near-duplicates on one side. Give an edited copy back
with `forgectl prepare --script {SCRIPT_NAME}`.
"""

from __future__ import annotations
'''
    parts = [header]
    for module in _MODULES:
        parts.append(
            f"# {'-' * 100}\n# {module}: the same code as forged/brain/scripts/{module}\n# {'-' * 100}\n"
        )
        parts.append(_body(module) + "\n")
    mapping_literal = json.dumps(mapping.model_dump(), indent=4, sort_keys=True)
    parts.append(
        "# The column mapping this script implements (validated by Forge's ColumnMapping).\n"
        f"MAPPING: dict[str, Any] = json.loads(\n    r'''{mapping_literal}'''\n)\n\n"
        'if __name__ == "__main__":\n    sys.exit(main(sys.argv[1:], MAPPING))\n'
    )
    return "\n\n".join(parts)
