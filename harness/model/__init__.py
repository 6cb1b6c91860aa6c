"""The model side: a GPT assembled from the registry's slots (configured by harness.config.model).

    gpt.py          the GPT itself (embeddings, blocks, head) and its accounting
    backends.py     attention kernels: interchangeable runtime backends with fallbacks
    kv_cache.py     the key/value cache of generation
    generate.py     sampling: greedy, temperature, top-k, with the cache
    hf_interop.py   weights to and from Hugging Face GPT-2 and Llama
    hf_source.py    a Hugging Face model by id or folder: its files, revision and tokenizer

Nothing here knows studies, tracking or training.
"""
