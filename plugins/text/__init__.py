"""Language modelling on an offline English corpus (CPython's pydoc topics by default, or a folder
of .txt files), tokenized with the teacher LLM's own tokenizer read from its local files; token
embeddings and the LM head start from the LLM's embedding matrix. Nothing reaches for a hub."""
