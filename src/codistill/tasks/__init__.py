"""Tasks: how a problem becomes a prompt, and how a completion is checked."""

from codistill.tasks.base import Problem, Prompt, Task, cut_at_stops


def build_task(task_name: str, task_cfg) -> Task:
    """The task object for ``dataset.task`` with the options of ``task:``."""
    if task_name == "gsm":
        from codistill.tasks.gsm import GSMTask

        return GSMTask(task_cfg.prompt_style, abs_tol=task_cfg.abs_tol, rel_tol=task_cfg.rel_tol,
                       exemplars_file=task_cfg.exemplars_file)
    if task_name == "humaneval":
        from codistill.tasks.humaneval import HumanEvalTask

        return HumanEvalTask(task_cfg.code_style)
    if task_name == "mbpp":
        from codistill.tasks.mbpp import MBPPTask

        return MBPPTask()
    if task_name in ("humaneval_plus", "mbpp_plus"):  # EvalPlus's tests (tasks/evalplus.py)
        from codistill.tasks import evalplus

        return evalplus.HumanEvalPlusTask(task_cfg.code_style) if task_name == "humaneval_plus" else evalplus.MBPPPlusTask()
    raise ValueError(f"dataset.task: no task named {task_name!r} "
                     "(known: gsm, humaneval, mbpp, humaneval_plus, mbpp_plus)")


__all__ = ["Problem", "Prompt", "Task", "build_task", "cut_at_stops"]
