"""The `careledger import` command: files to the gateway with a progress bar and a summary
(the work itself: gateway/importer.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from careledger.gateway.importer import (
    ImportError_,
    ImportReport,
    ImportState,
    import_files,
    ordered_files,
)
from careledger.gateway.smart.backend_client import (
    BackendServicesAuth,
    ClientKey,
    TokenRequestError,
)


@contextlib.contextmanager
def errors(fail: Callable[[str], typer.Exit]) -> Iterator[None]:
    try:
        yield
    except (ImportError_, TokenRequestError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise fail(f"the gateway did not answer: {exc}") from None


def run(paths: list[Path], key: Path, url: str, state_file: Path, console: Console) -> None:
    files = ordered_files(paths)
    if not files:
        raise ValueError("no .json files to import")
    total = sum(len(orjson.loads(f.read_bytes()).get("entry") or []) for f in files)
    state = ImportState(state_file)
    auth = BackendServicesAuth(ClientKey.load(key))
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with (
        httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=600) as http,
        Progress(*columns, TimeRemainingColumn(), console=console) as progress,
    ):
        task = progress.add_task("resources", total=total)
        report = import_files(http, files, state, lambda n: progress.advance(task, n))
    _summary(report, console)


def _summary(report: ImportReport, console: Console) -> None:
    console.print(
        f"Imported {report.resources} resources from {report.bundles} bundle(s) in "
        f"{report.seconds:.1f} s ({report.per_second:.0f}/s); "
        f"{report.skipped_bundles} bundle(s) already done."
    )
    if report.by_status:
        statuses = ", ".join(f"{n} x {s}" for s, n in sorted(report.by_status.items()))
        console.print(f"Answers: {statuses}.")
    if report.claims:
        table = Table("patient", "claim code (give it once, out of band)")
        for claim in report.claims:
            table.add_row(claim.patient, claim.code)
        console.print(table)
