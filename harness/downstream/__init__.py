"""Downstream evaluation through lm-evaluation-harness (`pip install 'ablate[eval]'`).

    lm.py           ablate's GPT as an lm-eval language model (log-likelihoods, rolling, generation)
    tasks.py        the tasks of an `eval:` section: found offline, checked before training, scored
    python_cloze.py a multiple-choice task built from the docstrings of the standard library

Nothing here is imported until a study names tasks or `ablate eval` runs: lm-eval and its
dependencies are optional.
"""
