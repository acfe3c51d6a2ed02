"""evalkit — which hosted image-editing model should be the default for each price tier, and why.

The public surface::

    import evalkit
    evalkit.Catalog.load()                       # every model: endpoint, parameters, prices, limits
    evalkit.generate_image_edit(img, "…", model="qwen-edit-plus")   # one edit, any model
    evalkit.run(suite="core", models="all", budget_usd=5)           # a run (await evalkit.arun(...) in Jupyter)
    ws = evalkit.Workspace("evalkit-workspace"); ws.runs(); ws.calls(run_id); ws.scores(run_id)

Everything else lives in the package of its pipeline stage: evalkit.catalog, .providers, .suites, .engine,
.store, .scoring, .decide, .report and .sim (local servers speaking each provider's protocol).
"""

from __future__ import annotations

from evalkit._version import __version__
from evalkit.catalog import Catalog, ModelSpec
from evalkit.edit import ImageEditResult, agenerate_image_edit, generate_image_edit
from evalkit.engine import RunResult, arun, run
from evalkit.errors import Category, EvalkitError
from evalkit.providers.base import EditOutcome, EditRequest, ImageEditOptions, ImageEditProvider
from evalkit.store import Workspace

__all__ = [
    "Catalog",
    "Category",
    "EditOutcome",
    "EditRequest",
    "EvalkitError",
    "ImageEditOptions",
    "ImageEditProvider",
    "ImageEditResult",
    "ModelSpec",
    "RunResult",
    "Workspace",
    "__version__",
    "agenerate_image_edit",
    "arun",
    "generate_image_edit",
    "run",
]
