"""The Mamba4Net method (2025): adapt the teacher LLM with LoRA, initialise the student (CWR weight
reuse or otherwise), distil it with the task loss plus terms that pull it toward the teacher."""
