"""``method=persd``: personalised distillation (PERsD).

1. The student attempts every training problem once (``method.attempt_temperature``: 0.3, as
   the PersDistill code samples it; 0 = greedy), with the teacher's data seed
   (``teacher_seed``): the attempts are training data of a fixed source, shared by a seed sweep
   that shares the teacher pass.
2. Each attempt runs against the problem's hidden tests; a failed one gets execution feedback
   (the exception and the failing line, or the failing test's input / output / expected value;
   on GSM-style tasks the value returned, and the expected answer only with
   ``method.reveal_answer``).
3. Only the failed problems go to the teacher.  Its prompt (chat-templated for a chat teacher)
   holds the task, the student's attempt, the feedback and the paper's guidance
   (:data:`~codistill.tasks.base.REFINE_GUIDANCE`: rewrite a badly wrong attempt, otherwise stay
   close to it); it samples ``sampling.n`` refinements per problem, which are executed.
4. Refinements that pass become training pairs -- except, on tasks whose only test is one value
   (GSM), programs that compute nothing (``return 42``: ``Task.computes_nothing``), which
   passed by stating a guessed or copied number.  ``persd``: (task -> refined solution);
   ``persd_refine`` (persd_refine.py): (task + failed attempt + feedback -> refined solution);
   ``persd_combined`` (persd_combined.py): both.

Problems the student solves on its own are not sent to the teacher and give no training data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from codistill.config import MethodConfig, SamplingConfig
from codistill.methods.base import Method, MethodResult, RunContext, TrainingPlan, write_jsonl
from codistill.methods.ekt import select_kept
from codistill.methods.filtering import check_keep
from codistill.plugins import check
from codistill.tasks.base import REFINE_GUIDANCE
from codistill.tasks.feedback import collect_feedback

log = logging.getLogger(__name__)

#: feedback for a failed attempt whose tests, run one by one, did not show the failure
UNSPECIFIED_FEEDBACK = "The program fails the tests."


@dataclass
class PERsDConfig(MethodConfig):
    """PERsD: the student attempts each problem once; the teacher refines the failed attempts
    given the execution feedback; passing refinements are kept (``persd_refine`` /
    ``persd_combined`` differ only in the training pairs they make)."""

    name: str = "persd"
    # the student's one attempt per problem (0 = greedy); 0.3 as the PersDistill code samples it
    # (scripts/chatgpt_ilf_pipeline_auto_feedback_alpaca.sh: TEMP=0.3 for gen_student_attempt)
    attempt_temperature: float = 0.3
    keep: str = "unique"  # refinements kept per problem: first | unique (every distinct passing one)
    max_per_problem: Optional[int] = None  # with keep=unique: cap per problem
    # GSM-style tasks (the gold answer is the only test): name the expected answer in the feedback.
    # false (default): a teacher shown the answer could pass by returning it without solving
    reveal_answer: bool = False

    def check(self, key: str) -> None:
        check(self.attempt_temperature >= 0, f"{key}.attempt_temperature", "must be >= 0")
        check_keep(self.keep, self.max_per_problem, key)


class PERsD(Method):
    Config = PERsDConfig
    #: the kinds of training pair made from each kept refinement: "persd" (task -> solution),
    #: "persd_refine" (task + attempt + feedback -> solution)
    pair_kinds: tuple[str, ...] = ("persd",)

    def build(self, ctx: RunContext) -> MethodResult:
        cfg, m, task = ctx.cfg, self.cfg, ctx.task
        stop = list(cfg.sampling.stop or task.stop)
        run_opts = dict(timeout_s=cfg.task.timeout_s, memory_mb=cfg.task.memory_mb)

        # 1-2. the student's own attempt, judged on the hidden tests, with feedback when it fails
        attempt_sampling = SamplingConfig(n=1, temperature=m.attempt_temperature, top_p=cfg.sampling.top_p,
                                          max_new_tokens=cfg.sampling.max_new_tokens, stop=stop)
        drawn = ctx.rollout("student", ctx.train, sampling=attempt_sampling, desc="student attempts")
        s_tok, s_stats = drawn.tokenizer, drawn.stats
        attempts = [js[0] for js in drawn.judged]
        failed = [i for i, a in enumerate(attempts) if not a.passed]
        feedback = dict(zip(failed, collect_feedback(
            task, [ctx.train[i] for i in failed], [attempts[i].program for i in failed], visible=False,
            results=[attempts[i] for i in failed], reveal_answer=m.reveal_answer, **run_opts)))
        feedback = {i: fb or UNSPECIFIED_FEEDBACK for i, fb in feedback.items()}

        # 3. the teacher refines the failed attempts
        refined: dict[int, list] = {}
        t_prompts: dict[int, object] = {}
        t_stats = {"tokens_per_s": 0.0, "cached_prompts": 0}
        if failed:
            def refine_prompts(t_tok) -> list:  # the task, the student's attempt and its feedback
                return [task.render_refine(ctx.train[i], attempts[i].program, feedback[i], t_tok, chat=cfg.teacher.chat,
                                           guidance=REFINE_GUIDANCE) for i in failed]

            drawn = ctx.rollout("teacher", [ctx.train[i] for i in failed], prompts=refine_prompts,
                                desc="teacher refinements")
            t_prompts, t_stats = dict(zip(failed, drawn.prompts)), drawn.stats
            refined = dict(zip(failed, drawn.judged))

        # 4. passing refinements (that compute their answer) -> training pairs
        constant = {(i, idx) for i, js in refined.items() for idx, j in enumerate(js)
                    if j.passed and task.computes_nothing(j.program)}
        generations, train_set, pairs = [], [], []
        for i, (prob, a) in enumerate(zip(ctx.train, attempts)):
            generations.append({"problem_id": prob.id, "stage": "student_attempt", "source": "student",
                                "sample": 0, "completion": a.completion, "program": a.program,
                                "status": a.status, "passed": a.passed, "error": a.error,
                                "feedback": feedback.get(i)})
            for idx, j in enumerate(refined.get(i, [])):
                generations.append({"problem_id": prob.id, "stage": "teacher_refinement", "source": "teacher",
                                    "sample": idx, "prompt": t_prompts[i].text, "completion": j.completion,
                                    "program": j.program, "status": j.status, "passed": j.passed,
                                    "error": j.error, "computes_nothing": (i, idx) in constant})
            usable = [j for idx, j in enumerate(refined.get(i, [])) if (i, idx) not in constant]
            for j in select_kept(usable, m.keep, m.max_per_problem):
                for kind in self.pair_kinds:
                    if kind == "persd":
                        sp = task.render(prob, s_tok, chat=cfg.student.chat, shots=0)
                    else:
                        sp = task.render_refine(prob, a.program, feedback[i], s_tok, chat=cfg.student.chat)
                    completion = task.target(sp, j.program)
                    pairs.append({"prompt": sp.text, "completion": completion})
                    train_set.append({"problem_id": prob.id, "kind": kind, "source": "teacher",
                                      "attempt": a.program, "feedback": feedback[i], "program": j.program,
                                      "prompt": sp.text, "completion": completion})
        write_jsonl(ctx.run_dir / "generations.jsonl", generations)
        write_jsonl(ctx.run_dir / "train_set.jsonl", train_set)

        n_samples = sum(len(js) for js in refined.values())
        n_passing = sum(j.passed for js in refined.values() for j in js)
        solved = sum(any(j.passed and (i, idx) not in constant for idx, j in enumerate(js))
                     for i, js in refined.items())
        metrics = {
            "data/n_problems": len(ctx.train),
            "data/student_solved": len(ctx.train) - len(failed),
            "data/sent_to_teacher": len(failed),
            "data/n_samples": n_samples,
            "data/n_passing": n_passing,
            "data/problems_solved": solved,  # by a refinement that computes its answer
            "data/rejected_computes_nothing": len(constant),
            "data/n_kept": len(pairs),
            "student/tokens_per_s": s_stats["tokens_per_s"],
            "teacher/tokens_per_s": t_stats["tokens_per_s"],
            "teacher/cached_prompts": t_stats["cached_prompts"],
        }
        log.info("%s: the student solved %d/%d problems; the teacher refined %d of the %d others; "
                 "%d/%d refinements pass; %d training examples", self.name, len(ctx.train) - len(failed),
                 len(ctx.train), solved, len(failed), n_passing, n_samples, len(pairs))
        return MethodResult(TrainingPlan(pairs), metrics)
