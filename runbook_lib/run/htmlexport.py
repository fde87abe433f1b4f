"""HTML export of an executed notebook that renders its plotly figures offline.

nbconvert's template loads scripts from CDNs; the archive must open with no
network, years later. External scripts are dropped and one copy of plotly.js
from the installed plotly package is inlined in the head.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

_EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.IGNORECASE)


@lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def export(notebook: Path, target: Path) -> Path:
    nb = nbformat.read(str(notebook), as_version=4)  # type: ignore[no-untyped-call]
    exporter = HTMLExporter(template_name="lab")  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(nb)
    body = _EXTERNAL_SCRIPT.sub("", body)
    inline = f'<script type="text/javascript">{plotly_js()}</script>'
    body = body.replace("</head>", inline + "\n</head>", 1)
    target.write_text(body)
    return target
