"""Publishing the trained student: ``student.push_to_hub=<repo id>`` (off by default).

After the run's results are saved (metrics.json, status ok), the saved student
(``<run>/student``, LoRA merged) is uploaded to the Hugging Face hub with a model card written
from the run (:func:`model_card`): teacher, method, dataset, the data the student was trained on,
pass@k with 95% intervals, and the composed config (secrets redacted).  The card is also kept as
``<run>/student/README.md``.

The upload is the last step and never costs the results: any failure (no network, no token, a
refused repo) is logged with a message that names the repo and says how to upload later, and is
recorded in metrics.json as ``publish/error``; the run's status stays ok.  The token is
huggingface_hub's own (``HF_TOKEN`` or ``hf auth login``); codistill never reads or stores it.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

CARD_NAME = "README.md"


def _figure(metrics: dict, key: str) -> str:
    v = metrics[key]
    lo, hi = metrics.get(f"{key}_ci95_lo"), metrics.get(f"{key}_ci95_hi")
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def eval_rows(metrics: dict) -> list[tuple[str, str]]:
    """(figure, value [95% CI]) for every pass@k of the run, trained student first (pure)."""
    keys = [k for k in metrics if k.startswith(("eval/", "eval_base/")) and "/pass@" in k
            and isinstance(metrics[k], float) and "_ci95" not in k and "delta_vs_base" not in k]
    keys.sort(key=lambda k: (k.startswith("eval_base/"), "/plus/" in k, k))
    return [(k, _figure(metrics, k)) for k in keys]


def model_card(repo_id: str, metrics: dict, config_yaml: str) -> str:
    """The model card's markdown, from the run's metrics and config (pure)."""
    data = [f"- training examples kept: {metrics['data/n_kept']}" if "data/n_kept" in metrics else None,
            f"- from {metrics['data/n_samples']} samples; {metrics.get('data/problems_solved', 0)}/"
            f"{metrics.get('data/n_problems', 0)} training problems solved" if "data/n_samples" in metrics else None,
            f"- test problems: {metrics['data/n_test_problems']}" if "data/n_test_problems" in metrics else None,
            f"- test split: {metrics['data/split']}" if "data/split" in metrics else None]
    table = "\n".join(f"| {k} | {v} |" for k, v in eval_rows(metrics)) or "| (no evaluation) | |"
    lines = [
        "---", "library_name: transformers", "tags:", "- codistill", "- code", "- distillation", "---", "",
        f"# {repo_id}", "",
        f"A student model distilled by codistill with the **{metrics.get('method')}** method: "
        f"teacher **{metrics.get('teacher')}**, student **{metrics.get('student')}**, dataset "
        f"**{metrics.get('dataset')}**" + (f" (evaluated on **{metrics['eval_dataset']}**)" if "eval_dataset" in metrics
                                           else "") + f", seed {metrics.get('seed')}.", "",
        "## Training data", "", *[d for d in data if d], "",
        "## Evaluation", "",
        "pass@k on the test problems, 95% bootstrap interval over problems in brackets "
        "(`eval/plus/...`: EvalPlus's base + plus tests; `eval_base/...`: the student before training).", "",
        "| figure | value [95% CI] |", "|---|---|", table, "",
        "## Config", "", "The composed codistill config of the run (secrets redacted):", "",
        "```yaml", config_yaml.rstrip(), "```", "",
    ]
    return "\n".join(lines)


def upload(repo_id: str, folder: Path, *, private: bool = True) -> str:
    """Create (or reuse) the hub repo and upload ``folder``; returns the commit URL.  The one call
    that touches the network (tests replace HfApi's methods here)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                             commit_message="codistill: trained student and model card")
    return str(getattr(info, "commit_url", info))


def publish(repo_id: str, run_dir: Path, metrics: dict, config_yaml: str) -> dict:
    """Write the card into ``run_dir/student`` and upload the folder.  Never raises: returns the
    ``publish/*`` metrics (``publish/url`` on success, ``publish/error`` with the reason)."""
    folder = Path(run_dir) / "student"
    out: dict = {"publish/repo_id": repo_id}
    if not (folder / "config.json").exists():
        out["publish/error"] = (f"no saved student in {folder} to push to {repo_id} (the method trained nothing, "
                                "or train.save_student=false)")
        log.error("publish: %s", out["publish/error"])
        return out
    (folder / CARD_NAME).write_text(model_card(repo_id, metrics, config_yaml), encoding="utf-8")
    try:
        out["publish/url"] = upload(repo_id, folder)
        log.info("publish: pushed %s to %s", folder, repo_id)
    except Exception as e:  # no network, no token, a refused repo: the results are already saved
        out["publish/error"] = (f"push to the hub repo {repo_id!r} failed ({type(e).__name__}: {str(e)[:300]}); "
                                f"the run's results are saved and the student is in {folder}: upload it later with "
                                f"`hf upload {repo_id} {folder}`")
        log.error("publish: %s", out["publish/error"])
    return out
