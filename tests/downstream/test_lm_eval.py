"""Downstream tasks through lm-evaluation-harness: on a tiny GPT-2 saved with `save_pretrained`,
ablate's wrapper gives lm-eval's own Hugging Face backend's per-item log-likelihoods (within
1e-4), rolling log-likelihoods and greedy generations, and its accuracy on the shipped task and
on a local-file task; a study scores a task as a secondary metric (or its verdict) without
changing what it trains; a task whose data are missing offline stops it before training."""

import json
import subprocess

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from harness.config.eval import EvalConfig  # noqa: E402
from harness.downstream.lm import AblateLM  # noqa: E402
from harness.downstream.python_cloze import docstrings  # noqa: E402
from harness.downstream.tasks import task_specs  # noqa: E402
from harness.training.starting_point import trained_model  # noqa: E402
from tests import warm  # noqa: E402

LOCAL_TASK = """
task: colours
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A GPT-2 of 2 layers with a byte-level BPE of 512 ids trained on the standard library's
    docstrings (eos <|endoftext|>), saved as Hugging Face saves a model: the folder."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(docstrings()[:3000], trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = bpe.token_to_id("<|endoftext|>")
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(folder)
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=eos, eos_token_id=eos, architectures=["GPT2LMHeadModel"])
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def local_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    colours = ["red", "green", "blue", "yellow"]
    items = [{"question": f"Item {i}: the colour of the {thing} is", "choices": colours, "answer": i % 4}
             for i, thing in enumerate(["sky", "grass", "sun", "sea", "leaf", "rose", "lemon", "cloud"] * 3)]
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    (folder / "colours.yaml").write_text(LOCAL_TASK.format(items=folder / "items.jsonl"))
    return folder / "colours.yaml"


def _both(gpt2):
    ours = AblateLM(*trained_model(f"hf:{gpt2}", torch.device("cpu")), batch_size=8)
    theirs = HFLM(pretrained=str(gpt2), batch_size=8, device="cpu", max_length=128)
    return ours, theirs


def _per_item(lm, tasks):
    evaluated = simple_evaluate(model=lm, tasks=tasks, limit=40, log_samples=True, bootstrap_iters=0,
                                random_seed=None, numpy_random_seed=None, torch_random_seed=None)
    task = next(iter(evaluated["samples"]))
    items = [[float(answer[0][0]) for answer in sample["resps"]] for sample in evaluated["samples"][task]]
    return items, evaluated["results"][task]


@pytest.mark.parametrize("task", ["python_cloze", "local"])
def test_the_wrapper_gives_the_log_likelihoods_and_accuracy_of_lm_eval_s_own_backend(gpt2, local_task, task):
    ours, theirs = _both(gpt2)
    tasks = task_specs(EvalConfig(tasks=[str(local_task) if task == "local" else task]))
    (our_items, our_results), (their_items, their_results) = _per_item(ours, tasks), _per_item(theirs, tasks)
    assert len(our_items) == len(their_items) == (24 if task == "local" else 40)
    assert torch.tensor(our_items) == pytest.approx(torch.tensor(their_items), abs=1e-4)
    assert our_results["acc,none"] == their_results["acc,none"]


def test_rolling_log_likelihoods_and_greedy_generations_match_lm_eval_s_backend(gpt2):
    ours, theirs = _both(gpt2)
    texts = [text[:700] for text in docstrings()[10:14]]  # longer than the context of 128 tokens: several windows
    rolling = [Instance("loglikelihood_rolling", {}, (text,), 0) for text in texts]
    assert ours.loglikelihood_rolling(rolling) == pytest.approx(theirs.loglikelihood_rolling(rolling), abs=1e-3)
    prompts = [Instance("generate_until", {}, (text[:80], {"until": ["\n\n"], "max_gen_toks": 12}), 0)
               for text in texts]
    assert ours.generate_until(prompts) == theirs.generate_until(prompts)


STUDY = """
name: downstream
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 64}
  train: {steps: 20, batch_size: 8, eval_interval: 10}
data: {val_windows: 4}
eval: {tasks: [python_cloze], limit: 40, every: 10}
grid: {model.placement: [pre, post]}
seeds: 2
"""


def _ablate(folder, *args):
    return subprocess.run([*warm.command(), *args], cwd=folder, capture_output=True, text=True, timeout=600)


def test_a_study_scores_a_task_as_a_secondary_metric_or_its_verdict_without_changing_its_training(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    ran = _ablate(tmp_path, "run", "study.yaml")
    assert ran.returncode == 0, ran.stderr
    assert "%|" not in ran.stderr and "fatal" not in ran.stderr, "lm-eval's progress bars and git stay quiet"
    report = (tmp_path / "reports" / "downstream" / "report.md").read_text()
    assert "Metric: final `val_loss`" in report and "**post vs pre**" in report
    assert "### `python_cloze/acc_norm` (higher is better)" in report
    snr = report.split("## Which metric can decide")[1].split("##")[0]
    assert all(f"| {metric}" in snr for metric in ("val_loss", "val_bpb", "python_cloze/acc", "python_cloze/acc_norm"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("downstream").experiment_id],
                               "tags.arm = 'pre' and tags.seed = '0' and tags.`ablate.kind` = 'arm_run'")
    scored = client.get_metric_history(run.info.run_id, "python_cloze/acc")
    assert [point.step for point in scored] == [10, 20] and 0 <= scored[-1].value <= 1
    assert "python_cloze/acc_stderr" in run.data.metrics

    # the same runs without tasks train the same numbers: scoring moves no random stream
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "study.yaml").write_text(STUDY.replace("eval: {tasks: [python_cloze], limit: 40, every: 10}\n", "")
                                                   .replace("[pre, post]", "[pre]").replace("seeds: 2", "seeds: 1"))
    plain = _ablate(tmp_path / "plain", "run", "study.yaml")
    assert plain.returncode == 0, plain.stderr
    other = MlflowClient(f"sqlite:///{tmp_path}/plain/mlflow.db")
    [plain_run] = other.search_runs([other.get_experiment_by_name("downstream").experiment_id],
                                    "tags.arm = 'pre' and tags.seed = '0' and tags.`ablate.kind` = 'arm_run'")
    curve = [[p.value for p in c.get_metric_history(r.info.run_id, "train_loss")]
             for c, r in ((client, run), (other, plain_run))]
    assert curve[0] == curve[1]

    # the task's score as the verdict: the wrong goal is refused, none (higher is better) judges the same runs
    wrong = _ablate(tmp_path, "run", "study.yaml", "--set", "report.metric=python_cloze/acc_norm",
                    "--set", "report.goal=minimize")
    assert wrong.returncode == 2 and "report.goal: for python_cloze/acc_norm, higher is better" in wrong.stderr
    judged = _ablate(tmp_path, "run", "study.yaml", "--set", "report.metric=python_cloze/acc_norm")
    assert judged.returncode == 0, judged.stderr
    assert "0 runs trained" in judged.stderr or "4 finished" in judged.stderr, judged.stderr
    assert "Metric: final `python_cloze/acc_norm` (higher is better)" in (
        tmp_path / "reports" / "downstream" / "report.md").read_text()


def test_a_task_whose_data_are_missing_offline_stops_the_study_before_training(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("[python_cloze]", "[python_cloze, arc_easy]"))
    refused = _ablate(tmp_path, "run", "study.yaml")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "eval task 'arc_easy': its data are not available" in refused.stderr
    assert "Hugging Face datasets cache" in refused.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_ablate_eval_scores_a_hugging_face_model_and_names_a_missing_task(gpt2, tmp_path):
    scored = _ablate(tmp_path, "eval", f"hf:{gpt2}", "--tasks", "python_cloze", "--limit", "20")
    assert scored.returncode == 0, scored.stderr
    assert "python_cloze/acc" in scored.stdout and "python_cloze/acc_norm" in scored.stdout
    missing = _ablate(tmp_path, "eval", f"hf:{gpt2}", "--tasks", "no_such_task")
    assert missing.returncode == 2 and "'no_such_task' is not an lm-eval task" in missing.stderr


@pytest.mark.parametrize("case", ["name", "twice", "unreadable"])
def test_tasks_that_would_lose_metrics_or_a_run_are_refused_before_training(tmp_path, local_task, case):
    """A task name MLflow cannot take as a metric name would drop the run's last records; two tasks
    of one name would log one set of metrics; a task a character vocabulary cannot read would
    fail only once a run had trained."""
    study = STUDY
    if case == "name":
        (tmp_path / "bad.yaml").write_text(local_task.read_text().replace("task: colours", 'task: "colours(v2)"'))
        study = study.replace("[python_cloze]", f"[{tmp_path / 'bad.yaml'}]")
        expected = "its name 'colours(v2)' cannot name MLflow metrics"
    elif case == "twice":
        (tmp_path / "again.yaml").write_text(local_task.read_text())
        study = study.replace("[python_cloze]", f"[{local_task}, {tmp_path / 'again.yaml'}]")
        expected = "another task of eval.tasks is named 'colours' too"
    else:
        (tmp_path / "ab.txt").write_text("ab ba aab bba " * 2000)
        study = study.replace("data: {val_windows: 4}", f"data: {{dataset: {{name: text, path: {tmp_path / 'ab.txt'}}}, "
                                                        "val_windows: 4}")
        expected = "eval task python_cloze: its text has characters the runs' character vocabulary lacks"
    (tmp_path / "study.yaml").write_text(study)
    refused = _ablate(tmp_path, "run", "study.yaml")
    assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_task_whose_questions_changed_is_scored_again_not_reported_from_old_runs(tmp_path, local_task):
    """The run key holds the tasks' examples: answers edited in a task's data file make new runs,
    whose scores the report shows, instead of the old runs' scores of other questions."""
    (tmp_path / "task").mkdir()
    items = tmp_path / "task" / "items.jsonl"
    items.write_text((local_task.parent / "items.jsonl").read_text())
    (tmp_path / "task" / "colours.yaml").write_text(local_task.read_text().replace(
        str(local_task.parent / "items.jsonl"), str(items)))
    study = (STUDY.replace("[python_cloze], limit: 40, every: 10", f"[{tmp_path / 'task' / 'colours.yaml'}]")
             .replace("seeds: 2", "seeds: 1"))
    (tmp_path / "study.yaml").write_text(study)
    first = _ablate(tmp_path, "run", "study.yaml")
    assert first.returncode == 0 and "2 runs trained" in first.stderr, first.stderr
    again = _ablate(tmp_path, "run", "study.yaml")
    assert "0 runs trained" in again.stderr, "nothing changed: nothing is trained"

    edited = [json.loads(line) for line in items.read_text().splitlines()]
    items.write_text("".join(json.dumps({**item, "answer": (item["answer"] + 1) % 4}) + "\n" for item in edited))
    rescored = _ablate(tmp_path, "run", "study.yaml")
    assert rescored.returncode == 0 and "2 runs trained" in rescored.stderr, rescored.stderr
