"""The ``speechprompt`` command: serve, model import/download, and (mounted) client, training and build commands.

This package is the one place above everything: it may import the core (``speechprompt``), the server and the
client; none of them imports it. Layers point one way: ``clients/`` stands alone, ``server/`` uses
``speechprompt/``, the core imports neither.

Refusals of the import commands (a checkpoint or bundle this runtime cannot take) print one line
``error: <why>`` and exit 1; ``speechprompt --debug <command>`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from speechprompt.paths import default_path

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="SpeechPrompt v2 inference server for prompt-tuned spoken language models.")
DEBUG = {"on": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show tracebacks of refused imports")) -> None:
    DEBUG["on"] = debug


def refusals(fn):
    """Run an import command; a refusal (CheckpointError, BundleError, PackageError, OSError) prints one line
    ``error: <why>`` and exits 1, unless ``--debug`` asks for the traceback."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from speechprompt.backbone import BundleError
        from speechprompt.importers.checkpoint import CheckpointError
        from speechprompt.package import PackageError

        try:
            return fn(*args, **kwargs)
        except (CheckpointError, BundleError, PackageError, OSError) as e:
            if DEBUG["on"]:
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None

    return run


@app.command()
def serve(host: str = typer.Option(None, help="bind address (default from settings: 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default 8000)"),
          bundle: Path = typer.Option(None, help="backbone bundle folder (default models/default, here or in the "
                                      "installation; SPEECHPROMPT_BUNDLE_DIR)"),
          store: str = typer.Option(None, help="task store: a folder (default prompts_store, here or in the "
                                    "installation; SPEECHPROMPT_STORE) or redis://host:port/db"),
          device: str = typer.Option(None, help="cpu, cuda or cuda:N"),
          precision: str = typer.Option(None, help="auto (default), fp32, bf16, int8 or ENCODER/UNIT_LM such as "
                                        "fp32/bf16 (SPEECHPROMPT_PRECISION)")) -> None:
    """Run the HTTP server. Options override SPEECHPROMPT_* environment variables."""
    from pydantic import ValidationError

    from server.main import run
    from server.settings import Settings

    overrides = {k: v for k, v in dict(host=host, port=port, bundle_dir=bundle, store=store, device=device,
                                       precision=precision).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as e:  # one line per bad setting, named as the operator sets it
        if DEBUG["on"]:
            raise
        for err in e.errors():
            name = "SPEECHPROMPT_" + "_".join(str(p) for p in err["loc"]).upper()
            typer.echo(f"error: setting {name}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    run(settings)


@app.command("import-gslm")
@refusals
def import_gslm_cmd(hubert: Path = typer.Option(..., exists=True, help="hubert_base_ls960.pt"),
                    km: Path = typer.Option(..., exists=True, help="km.bin (k-means codebook)"),
                    lm: Path = typer.Option(..., exists=True, help="unit LM checkpoint_best.pt"),
                    dictionary: Path = typer.Option(..., "--dict", exists=True, help="unit LM dict.txt"),
                    out: Path = typer.Option(Path("models/gslm-hubert100"), help="bundle folder to write"),
                    layer: int = typer.Option(6, help="HuBERT layer whose features are quantized"),
                    name: str = typer.Option("gslm-hubert100")) -> None:
    """Convert the official GSLM files (HuBERT, km.bin, unit LM + dict.txt) into a backbone bundle."""
    from speechprompt.importers.gslm import import_gslm

    fp = import_gslm(hubert, km, lm, dictionary, out, layer=layer, name=name)
    typer.echo(f"wrote {out} (fingerprint {fp})")


@app.command("download-gslm")
@refusals
def download_gslm_cmd(dest: Path = typer.Option(Path("models/downloads"), help="where the official files go"),
                      units: int = typer.Option(100, help="codebook size: 50, 100 or 200"),
                      out: Path = typer.Option(None, help="also import into this bundle folder")) -> None:
    """Download the official GSLM HuBERT, k-means and unit LM files (checksummed, resumable)."""
    from speechprompt.importers.gslm import extract_lm, gslm_files, import_gslm

    paths = _download_all(gslm_files(units), dest)
    ckpt, dct = extract_lm(paths[2], dest / f"hubert{units}_lm")
    typer.echo(f"downloaded to {dest}")
    if out is not None:
        fp = import_gslm(paths[0], paths[1], ckpt, dct, out, name=f"gslm-hubert{units}")
        typer.echo(f"wrote {out} (fingerprint {fp})")


def _download_all(remotes, dest: Path) -> list[Path]:
    """Download each official file with a progress bar, or plain lines when stderr is not a terminal
    (resumable, checksummed)."""
    from speechprompt.importers.gslm import download
    from speechprompt.training.progress import progress

    paths = []
    for remote in remotes:
        with progress(unit="B", unit_scale=True, desc=remote.name) as bar:
            def progress(done, total, bar=bar):
                bar.total = total
                bar.update(done - bar.n)
            paths.append(download(remote, dest, progress))
    return paths


@app.command("import-pgslm")
@refusals
def import_pgslm_cmd(hubert: Path = typer.Option(..., exists=True, help="hubert_base_ls960.pt"),
                     km: Path = typer.Option(..., exists=True, help="km.bin (k-means codebook, 100 units)"),
                     ulm: Path = typer.Option(..., exists=True, help="pGSLM ulm_checkpoints/<variant>.pt"),
                     f0_bins: Path = typer.Option(None, exists=True, help="mean_norm_log_f0_seg_bin.th (discrete F0)"),
                     f0_stats: Path = typer.Option(None, exists=True, help="f0_stats.pt (speaker-mean option)"),
                     out: Path = typer.Option(Path("models/pgslm-hubert100"), help="bundle folder to write"),
                     layer: int = typer.Option(6), normalization: str = typer.Option("utterance",
                                                                                  help="utterance or speaker")) -> None:
    """Convert the official pGSLM files into a backbone bundle of kind pgslm."""
    from speechprompt.importers.pgslm import import_pgslm

    fp = import_pgslm(hubert, km, ulm, out, f0_bins=f0_bins, f0_stats=f0_stats, layer=layer,
                      normalization=normalization)
    typer.echo(f"wrote {out} (fingerprint {fp})")


@app.command("download-pgslm")
@refusals
def download_pgslm_cmd(dest: Path = typer.Option(Path("models/downloads"), help="where the official files go"),
                       variant: str = typer.Option("discrete_prosody_shift_1_1", help="ulm_checkpoints variant"),
                       out: Path = typer.Option(None, help="also import into this bundle folder")) -> None:
    """Download the official pGSLM files (HuBERT, km100, multi-stream ULM, F0 bins and stats)."""
    from speechprompt.importers.pgslm import import_pgslm, pgslm_files

    paths = _download_all(pgslm_files(variant), dest)
    typer.echo(f"downloaded to {dest}")
    if out is not None:
        fp = import_pgslm(paths[0], paths[1], paths[2], out, f0_bins=paths[3], f0_stats=paths[4])
        typer.echo(f"wrote {out} (fingerprint {fp})")


@app.command("import-prompt")
@refusals
def import_prompt_cmd(checkpoint: Path = typer.Argument(..., exists=True, help="official prompt checkpoint_best.pt"),
                      task: str = typer.Option(..., help="task name for the package"),
                      labels: str = typer.Option(..., help="comma-separated labels in class-index order"),
                      bundle: Path = typer.Option(default_path("models/default"), help="backbone the prompts were trained on"),
                      store: str = typer.Option(str(default_path("prompts_store")),
                                                help="store to add it to (folder or redis:// URL)")
                      ) -> None:
    """Convert an official SpeechPrompt v2 prompt checkpoint into a task prompt package in a store."""
    import json

    from server.stores import open_store
    from speechprompt.importers.prompt import import_prompt

    try:
        meta = json.loads((bundle / "backbone.json").read_text())
    except OSError as e:
        raise OSError(f"{e}; pass the backbone bundle folder with --bundle DIR") from None
    pkg = import_prompt(checkpoint, task=task, labels=[x.strip() for x in labels.split(",")],
                        backbone_fingerprint=meta["fingerprint"], num_layers=meta["unit_lm"]["layers"],
                        backbone_kind=meta["kind"])
    target = open_store(store)
    target.put(task, pkg.version, pkg.data)
    target.close()
    typer.echo(f"{task} version {pkg.version} -> {store}")


def invoked_command(argv: list[str]) -> str | None:
    """The command an ``argv`` (``sys.argv``) names: its first argument that is not an option (the top level has only
    the ``--debug`` flag and ``--help``), or None."""
    return next((a for a in argv[1:] if not a.startswith("-")), None)


def _mount(argv: list[str] | None = None) -> None:
    """Client commands (classify, tasks, upload, ...) and training/build commands live with their code. The build
    commands' modules import torch (about 3 s here), so they are mounted only when the command line may need them:
    no command (``--help``, which lists every command), a build command, or a name that is no other command (so
    typer's "No such command" can suggest every name). ``speechprompt classify`` and the other HTTP commands then
    start without torch."""
    from clients.cli import register as register_client
    from speechprompt.training.cli import register as register_training

    register_client(app)
    register_training(app)
    light = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    if invoked_command(sys.argv if argv is None else argv) in light:
        return
    from speechprompt.training.build_backbone import register as register_build
    from speechprompt.training.build_default_cli import register as register_default
    from speechprompt.training.build_pgslm import register as register_pgslm

    register_build(app)
    register_default(app)
    register_pgslm(app)


_mount()


def main() -> None:
    app()
