"""Language models: what happens inside a Hugging Face causal LM (logit and tuned lens, direct
logit attribution, activation and attribution patching, head detectors, sparse autoencoders)."""
