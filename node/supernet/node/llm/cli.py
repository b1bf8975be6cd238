"""``supernet model``: pull catalog models into the local cache and list them."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from supernet.node.llm import catalog
from supernet.sdk.models import COMPUTE_PRECISIONS, served_model_id

app = typer.Typer(help="Models: pull into the local cache, list.", no_args_is_help=True)
console = Console()

_LABELS = {
    "download": "download",
    "extract": "extract GGUF",
    "convert": "dequantise",
    "tokenizer": "tokenizer",
    "manifest": "manifest",
}

_BYTE_STAGES = {"download", "extract"}


class _AmountColumn(ProgressColumn):
    """Bytes (done/total) for the download and the extraction; a count for the other stages."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes, self._count = DownloadColumn(), MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        return (self._bytes if task.fields.get("in_bytes") else self._count).render(task)


@app.command("pull")
def pull_cmd(name: str = typer.Argument(catalog.DEFAULT_MODEL, help="Catalog name.")) -> None:
    """Download and convert a catalog model, showing bytes downloaded (a no-op when it is already
    in the cache)."""
    if name not in catalog.CATALOG:
        console.print(f"[red]unknown model {name!r}[/red]; known: {', '.join(catalog.CATALOG)}")
        raise typer.Exit(2)
    if catalog.is_pulled(name):
        rebuilt = catalog.refresh_manifest(name)
        if rebuilt is not None:
            console.print(f"{name}: manifest.json rewritten: {rebuilt}", markup=False, highlight=False)
        console.print(f"{name} is already pulled: {catalog.models_dir() / name} (nothing to download)")
        return
    columns = (TextColumn("{task.description:<14}"), BarColumn(), _AmountColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = _LABELS.get(stage, stage)
                tasks[stage] = bar.add_task(label, total=total, in_bytes=stage in _BYTE_STAGES)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            path = catalog.pull(name, progress=report)
        except catalog.ModelPullError as exc:
            bar.stop()
            console.print(str(exc), style="red", markup=False, highlight=False)
            raise typer.Exit(1) from None
    console.print(f"{name} ready in {path}")


@app.command("list")
def list_cmd() -> None:
    """Catalog models, whether each is pulled, and the ids of pulled ones: the weights id and the
    served id per compute precision (what a node registers and users sign)."""
    table = Table("name", "pulled", "description")
    ids: list[str] = []  # printed unwrapped below the table: an id must stay copyable
    for entry in catalog.CATALOG.values():
        pulled = catalog.is_pulled(entry.name)
        if pulled:
            mid = json.loads((catalog.models_dir() / entry.name / "manifest.json").read_text())["model_id"]
            ids.append(f"{entry.name}  weights  {mid}")
            ids += [f"{entry.name}@{c}  served  {served_model_id(mid, c)}" for c in COMPUTE_PRECISIONS]
        table.add_row(entry.name, "yes" if pulled else "no", entry.description)
    console.print(table)
    if ids:
        console.print("ids (a node computing in a precision serves, and users sign, its served id):")
        for line in ids:
            console.print(f"  {line}", soft_wrap=True)
