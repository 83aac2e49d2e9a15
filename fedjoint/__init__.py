"""fedjoint's Python face: run a joint job in a notebook, verify and replay transcripts.

    import fedjoint
    result = fedjoint.run_local("job.toml", bank=bank_df, platform=platform_df)
    result.metrics["test_auc"]; result.score(new_bank_df, new_platform_df)
    result.report("report.html", oot=(bank_2025_df, platform_df))   # docs/report.md

A pipeline job (``algorithm = "pipeline"``, ``[[stages]]``) runs the same way;
``result.stages`` holds each stage's parts and metrics (docs/pipelines.md).
:func:`submit` runs the same job on real nodes (the bank's node.toml), as ``fedjoint
job submit --wait``.

:func:`run_local` runs the node's own pipeline (the function a node's job process
runs) for both parties in one process; :func:`verify`, :func:`replay` and
:func:`joint_replay` are the auditor's commands (``fedjoint audit verify|replay``,
``fedjoint audit replay T --party-dir D --peer T2 --peer-dir D2``). The params classes are the typed
``[params]`` / ``[psi]`` tables of job.toml.
"""

from federation.audit import joint_replay, replay, verify
from fedjoint.local import FedjointError, RunResult, run_local
from fedjoint.nodes import submit
from parties.common.lr_common import LRParams
from parties.common.secureboost_params import SecureBoostParams
from parties.common.selection import SelectionParams
from parties.common.woe import BinningParams
from parties.common.woe_lr import WoeLRParams
from parties.registry import names as algorithms
from psi.protocol import PsiParams

__all__ = ["BinningParams", "FedjointError", "LRParams", "PsiParams", "RunResult",
           "SecureBoostParams", "SelectionParams", "WoeLRParams", "algorithms",
           "joint_replay", "replay", "run_horizontal", "run_local", "submit", "verify"]


def run_horizontal(job, banks: dict, **kw):
    """A horizontal (Flower) job in one process: see
    :func:`federation.horizontal.job.run_horizontal` (needs ``fedjoint[horizontal]``;
    imported on first use so ``import fedjoint`` does not load torch)."""
    from federation.horizontal.job import run_horizontal as run
    return run(job, banks, **kw)
