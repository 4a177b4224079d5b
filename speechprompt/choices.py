"""The names a task prompt package or a training recipe may take, in a module that imports nothing heavy, so the
command line lists them in ``--help`` without loading torch (``package.py``, ``training/trainer.py`` and
``training/cli.py`` all read them here)."""

READOUTS = ("separator", "mean")  # where the label is read (prompting.py); "mean" needs package format version >= 2
UNIT_VIEWS = ("units", "clusters")  # what a task's prompts read (unit_views.py); "clusters" needs format version 3
VERBALIZERS = ("learnable", "fixed")  # v2's learnable linear map | v1's fixed map of labels to frequent units
