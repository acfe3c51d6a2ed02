"""The model-choice report: ``model_choice_report.ipynb`` executed by papermill, exported to one HTML file.

:func:`build_report` runs the bundled notebook in a fresh kernel (``kernel_name`` explicit, a per-cell
timeout, the kernel started in the output folder) and writes, in ``reports/<run_id>/`` by default::

    model_choice_report.html   the report: no code, images inlined as data URIs, no CDN scripts
    model_choice_report.ipynb  the executed notebook (for auditing; its parameters hold no secrets)
    tier_defaults.json         evalkit.decide.tiers.write_tier_defaults — what a product's model selector reads
    models.csv  by_operation.csv  by_category.csv  failures.csv  recommendations.csv

Secrets: the notebook's parameters are only the workspace path, the run id, the quality spec and the
tiers path. Papermill saves parameters into the output notebook (the ``injected-parameters`` cell and
``metadata.papermill.parameters``), so keys are never parameters: the kernel inherits the caller's
environment, where providers and the judge read them.

Offline HTML: nbconvert's ``lab`` template loads require.js, MathJax and mermaid from cdnjs. The report
uses a template derived from it (``_TEMPLATE``) that drops those scripts and widget loaders — the
report has no widgets, math or diagrams, and without MathJax a "$0.04 … $0.05" in a table stays text.
Plots are PNG, grids JPEG thumbnails, all inlined; ``external_references`` finds anything that would
still load from the network.

The section functions the notebook calls (``prepare_report``, ``overview_html``, ``recommendations_html``,
…) live in :mod:`evalkit.report.sections`, so tests reach every piece of logic without a kernel; they are
re-exported here, so ``evalkit.report.<name>`` (what the notebooks call) keeps working.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.credentials import redact
from evalkit.decide.quality import QualityLike
from evalkit.errors import EvalkitError, InvalidInputError
from evalkit.report.sections import ReportData, prepare_report, quality_string
from evalkit.store import Workspace, check_id

REPORT_NOTEBOOK = "model_choice_report.ipynb"

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{% block data_png scoped %}<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ output.metadata.get('image/png', {}).get('alt', 'figure') | escape_html }}"></div>{% endblock data_png %}
{% block data_jpg scoped %}<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/jpeg;base64,{{ output.data['image/jpeg'] | escape_html }}"
 alt="{{ output.metadata.get('image/jpeg', {}).get('alt', 'figure') | escape_html }}"></div>{% endblock data_jpg %}
"""


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    notebook: Path
    tier_defaults: Path
    tables: list[Path] = field(default_factory=list)


# -- files ----------------------------------------------------------------------------------------------


def write_tables(data: ReportData, out_dir: str | os.PathLike) -> list[Path]:
    """The report's tables as CSV (numbers unformatted, one row per model / model × group)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {
        "models.csv": data.models,
        "by_operation.csv": data.by_operation,
        "by_category.csv": data.by_category,
        "failures.csv": data.failures,
        "recommendations.csv": data.decision.to_frame(),
    }
    from evalkit.decide.sessions import session_table

    sessions = session_table(data.ws, data.run_id, data.quality)
    if not sessions.empty:  # one row per (session, model, repeat): final/mean quality, drift, cost, latency
        frames["sessions.csv"] = sessions
    paths = []
    for name, df in frames.items():
        df.to_csv(out / name, index=False)
        paths.append(out / name)
    return paths


_EXTERNAL = re.compile(
    r"""<(?:script|img|iframe|link|source|video|audio|embed)\b[^>]*?\b(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    r"""|url\(\s*["']?((?:https?:)?//[^)"'\s]+)|@import\s+["']((?:https?:)?//[^"']+)""",
    re.I,
)


def external_references(page: str) -> list[str]:
    """URLs a browser would fetch to show ``page`` (scripts, images, stylesheets, CSS url()/@import)."""
    return [next(g for g in m.groups() if g) for m in _EXTERNAL.finditer(page)]


def export_html(notebook: str | os.PathLike, html_path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Executed notebook → one offline HTML page without code, prompts, parameters or stderr."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    drop = {"parameters", "injected-parameters", "papermill-error-cell-tag"}
    nb.cells = [c for c in nb.cells if not drop & set(c.get("metadata", {}).get("tags", []))]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
            ]
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"evalkit_report.html.j2": _TEMPLATE})],
        template_file="evalkit_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    path = Path(html_path)
    path.write_text(body, encoding="utf-8")
    return path


@contextmanager
def _kernel_imports_this_evalkit() -> Iterator[None]:
    """The kernel inherits our environment: put this evalkit first on its PYTHONPATH, so a source
    checkout (not installed) works and the kernel never imports a different installed copy.
    (It changes ``os.environ`` for the duration: build one report at a time per process.)"""
    root = str(Path(__file__).resolve().parents[2])
    before = os.environ.get("PYTHONPATH")
    parts = [p for p in (before or "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _kernel_transport_config() -> Any:
    """Kernel-manager settings for papermill's client: CurveZMQ keys provisioned by the manager.

    ipykernel ≥ 7 warns on stderr ("Kernel is running over TCP without encryption …") when its
    sockets are plain TCP. jupyter_client ≥ 8.10 can hand the kernel Curve keys itself
    (``KernelManager.transport_encryption = "auto"``: only for kernelspecs declaring
    ``supported_encryption = ["curve"]``, as ipykernel's does), which encrypts the local traffic and
    so ends the warning for the right reason. Older jupyter_client (no such setting) or a libzmq
    without Curve keep the default: the warning then stays, and the report is unaffected."""
    from traitlets.config import Config

    try:
        import zmq
        from jupyter_client.manager import KernelManager
    except ImportError:  # pragma: no cover - papermill depends on both
        return Config()
    if not KernelManager.class_traits().get("transport_encryption") or not zmq.has("curve"):
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def execute_notebook(
    name: str,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    cwd: Path,
    cell_timeout_s: float,
    kernel_name: str = "python3",
    start_timeout_s: float = 120,
) -> Path:
    """Run a bundled notebook with papermill; failures become EvalkitError naming the cell.

    ``parameters`` must hold no secrets (papermill writes them into the output notebook)."""
    import papermill as pm
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from evalkit.resources import notebooks_dir

    source = notebooks_dir() / name
    if not source.is_file():
        raise EvalkitError(f"bundled notebook {source} is missing", hint="reinstall evalkit")
    where = f"the partial notebook is {output}"
    try:
        with _kernel_imports_this_evalkit():
            pm.execute_notebook(
                str(source),
                str(output),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                progress_bar=False,
                execution_timeout=cell_timeout_s,
                start_timeout=start_timeout_s,
                cwd=str(cwd),
                config=_kernel_transport_config(),
            )
    except PapermillExecutionError as exc:
        first = next((line for line in (exc.source or "").splitlines() if line.strip()), "")
        number, total = _template_position(source, exc.cell_index)
        raise EvalkitError(
            f"{name}: cell {number} of {total} (In [{exc.exec_count}]) `{redact(first)[:120]}` "
            f"raised {exc.ename}: {redact(str(exc.evalue))[:600]}",
            hint=f"{where}; fix the cause above and build again",
        ) from None
    except CellTimeoutError:
        raise EvalkitError(
            f"{name}: a cell ran longer than {cell_timeout_s:g} s", hint=f"{where}; raise cell_timeout_s for large runs"
        ) from None
    except DeadKernelError:
        raise EvalkitError(
            f"{name}: the kernel died (often out of memory)", hint=f"{where}; free memory or report a smaller run"
        ) from None
    except NoSuchKernel:
        raise EvalkitError(
            f"no Jupyter kernel named {kernel_name!r}",
            hint="pass kernel_name='python3' or run `python -m ipykernel install --sys-prefix`",
        ) from None
    return output


def _template_position(source: Path, executed_index: int) -> tuple[int, int]:
    """(1-based cell number in the bundled notebook, its cell count): papermill's index counts the
    injected-parameters cell it inserted after the parameters cell."""
    import nbformat

    cells = nbformat.read(str(source), as_version=4).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    index = executed_index - 1 if tagged and executed_index > tagged[0] else executed_index
    return index + 1, len(cells)


def build_report(
    ws: Workspace | str | os.PathLike | None,
    run_id: str,
    *,
    out_dir: str | os.PathLike | None = None,
    quality: QualityLike | None = None,
    tiers: str | os.PathLike | None = None,
    cell_timeout_s: float = 600,
    kernel_name: str = "python3",
) -> ReportResult:
    """Execute ``model_choice_report.ipynb`` for ``run_id`` and write the report folder (module docstring).

    ``quality``: None chooses (judge VIEScore when scored, else SSIM — the report says which and why);
    ``tiers``: a tiers TOML file (None: the workspace's, else the bundled one). ``ws`` None: the default
    workspace (``$EVALKIT_WORKSPACE`` or ``./evalkit-workspace``)."""
    workspace = ws if isinstance(ws, Workspace) else Workspace(ws, create=False)
    check_id(run_id, "run id")
    workspace.get_run(run_id)  # a clear error before a kernel starts
    if tiers is not None and not Path(tiers).is_file():
        raise InvalidInputError(f"tiers file {tiers} does not exist", hint="pass an existing tiers TOML file")
    out = Path(out_dir) if out_dir is not None else Path.cwd() / "reports" / run_id
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    notebook = out / REPORT_NOTEBOOK
    params = {
        "workspace": str(workspace.path.resolve()),
        "run_id": run_id,
        "quality": quality_string(quality),
        "tiers": str(Path(tiers).resolve()) if tiers is not None else "",
    }
    execute_notebook(REPORT_NOTEBOOK, notebook, params, cwd=out, cell_timeout_s=cell_timeout_s, kernel_name=kernel_name)
    html_path = export_html(notebook, out / "model_choice_report.html", title=f"Model choice report — run {run_id}")
    data = prepare_report(workspace, run_id, quality=quality, tiers=tiers)
    from evalkit.decide.tiers import write_tier_defaults

    tier_path = write_tier_defaults(data.decision, out / "tier_defaults.json")
    return ReportResult(
        out_dir=out, html=html_path, notebook=notebook, tier_defaults=tier_path, tables=write_tables(data, out)
    )


__all__ = ["ReportResult", "build_report", "write_tables", "export_html", "external_references", "execute_notebook"]
