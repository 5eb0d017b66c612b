"""The guard: Llama Guard prompt construction (``prompt``), verdict parsing (``verdict``), the
batched transformers backend (``transformers_backend``) and the step over an evaluation (``step``)."""
