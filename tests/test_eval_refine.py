"""Multi-step inference (eval.refine_steps): only attempts failing the VISIBLE tests are refined,
their prompt carries the visible feedback only, and pass@1 is reported per step.

The model is a scripted backend (it answers a refinement prompt with a fixed body), so the
protocol is checked exactly; real HumanEval problems, prompts and sandboxed execution."""

from types import SimpleNamespace

from codistill.datasets.humaneval import read_humaneval
from codistill.evaluation import pass_metrics
from codistill.evaluation.refine import refine_steps
from codistill.config import SamplingConfig
from codistill.tasks.humaneval import HumanEvalTask
from codistill.tasks.judge import judge_completions


class _NoChat:
    chat_template = None


class ScriptedBackend:
    """Answers each prompt with the body registered for the problem whose prompt it ends with."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.prompts = answers, []

    def generate(self, prompts, sampling, seed, on_batch=None):
        self.prompts.extend(prompts)
        return [[next(b for tail, b in self.answers.items() if p.endswith(tail))] * sampling.n for p in prompts]


def test_only_attempts_failing_visible_tests_are_refined_with_visible_feedback():
    task, tok = HumanEvalTask(), _NoChat()
    by_id = {p.id: p for p in read_humaneval()}
    problems = [by_id["HumanEval/0"], by_id["HumanEval/2"], by_id["HumanEval/53"]]
    first = [problems[0].meta["canonical_solution"],  # passes everything: kept
             "    return number\n",  # fails the visible example: refined
             "    return {(2, 3): 5, (5, 7): 12}[(x, y)]\n"]  # passes the visible examples only: kept
    prompts = [task.render(p, tok, chat=False, shots=0) for p in problems]
    judged = judge_completions(task, problems, prompts, [[c] for c in first], timeout_s=5, memory_mb=1024)
    assert [j[0].passed for j in judged] == [True, False, False]

    backend = ScriptedBackend({problems[1].meta["prompt"]: "    return number % 1.0\n"})
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=64, stop=list(task.stop))
    steps = refine_steps(backend, tok, task, problems, judged, sampling, steps=2, chat=False, seed=0,
                         model_id=None, cache_root=None, timeout_s=5, memory_mb=1024)
    assert [s.refined for s in steps] == [[(1, 0)], []]  # step 2: nothing fails its visible tests
    [prompt] = backend.prompts
    assert "# Failed test: assert truncate_number(3.5) == 0.5" in prompt
    assert "1.33" not in prompt and "123.456" not in prompt  # the hidden tests stay hidden
    assert prompt.startswith(problems[1].meta["prompt"] + "    return number")
    ev = SimpleNamespace(k=[1], greedy=True, n_samples=0)
    figures = [pass_metrics(js, "greedy", 1, ev, prefix="")["pass@1"] for js in [judged] + [s.judged for s in steps]]
    assert figures == [1 / 3, 2 / 3, 2 / 3]


def test_identical_refinement_prompts_in_two_chains_are_sampled_independently():
    """Four chains of one problem fail with the same program, so their refinement prompts are
    identical; sampled refinement (T=1, a real tiny model) must still draw each chain's own
    completion, not one shared by the four (issue 14: prompt de-duplication biased pass@k)."""
    from codistill.config import ModelConfig, TinyConfig
    from codistill.generation.hf import HFBackend
    from codistill.models import load_model, load_tokenizer

    cfg = ModelConfig(name="tiny", source="tiny", chat=False, dtype="float32",
                      tiny=TinyConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128))
    model, tok = load_model(cfg, "/nonexistent-cache"), load_tokenizer(cfg, "/nonexistent-cache")
    task = HumanEvalTask()
    problem = next(p for p in read_humaneval() if p.id == "HumanEval/2")
    prompt = task.render(problem, tok, chat=False, shots=0)
    judged = judge_completions(task, [problem], [prompt], [["    return number\n"] * 4], timeout_s=5, memory_mb=1024)
    sampling = SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_new_tokens=12, stop=list(task.stop))
    [step] = refine_steps(HFBackend(model, tok, batch_size=8), tok, task, [problem], judged, sampling, steps=1,
                          chat=False, seed=0, model_id=None, cache_root=None, timeout_s=5, memory_mb=1024)
    assert step.refined == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert len({step.feedback[ik] for ik in step.refined}) == 1  # the same prompt for every chain
    assert len({j.completion for j in step.judged[0]}) > 1  # yet the chains' refinements differ
