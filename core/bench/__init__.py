"""Efficiency benchmark of teacher vs student (``mamba4net bench`` and the pipeline's benchmark stage).

    plan.py      what to sweep (sequence lengths, batch sizes, history lengths, budgets)
    measure.py   timing (warm-up, repetitions, medians, a time budget) and peak memory of one call
    size.py      parameters and on-disk bytes of what must be deployed
    sweep.py     throughput, streaming latency and memory sweeps over two backbones, side by side
    plots.py     PNG plots of a bench.json
    tables.py    bench.md (Markdown tables of a bench.json)
    run.py       build the models (config or finished run), run everything, write the files

The sweeps feed synthetic ``inputs_embeds (B, L, d_model)`` to the *backbones*: the backbone is the
part whose cost grows with the sequence length (encoders and heads are per-token or per-answer
layers, the same for both models). The whole model is also timed once on a real task batch.
"""
