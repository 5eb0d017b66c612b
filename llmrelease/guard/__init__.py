"""Safety classification with Llama Guard: prompt construction, verdict parsing, batched backends."""
