"""`ablate eval`: one model scored on downstream tasks through lm-evaluation-harness."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def evaluate(
    model: Annotated[str, typer.Argument(help="a checkpoint written by ablate train/run (or its run folder), or "
                                              "hf:<model id or folder> (a Hugging Face GPT-2 or Llama model)")],
    tasks: Annotated[list[str], typer.Option("--tasks", help="an lm-eval task name (its data in the local Hugging "
                                                            "Face cache), a task YAML, or python_cloze; repeat for "
                                                            "several")],
    limit: Annotated[Optional[int], typer.Option(min=1, help="examples per task; default all")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(min=0, help="examples shown before each question; default "
                                                                   "each task's own")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="sequences per forward pass")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps")] = "auto",
):
    """Score a checkpoint or a Hugging Face model on downstream tasks (lm-evaluation-harness)."""
    import pandas as pd
    from rich.console import Console

    from harness.cli.common import table
    from harness.config.eval import EvalConfig
    from harness.training.scoring import score_model

    cfg = EvalConfig(tasks=tasks, limit=limit, num_fewshot=num_fewshot, batch_size=batch_size)
    scores = score_model(model, cfg, device)
    rows = [{"metric": name, "value": f"{value:.4f}",
             "stderr": f"{scores[name + '_stderr']:.4f}" if name + "_stderr" in scores else "–"}
            for name, value in scores.items() if not name.endswith("_stderr")]
    Console().print(table(pd.DataFrame(rows), f"{model} on {', '.join(tasks)}"))
