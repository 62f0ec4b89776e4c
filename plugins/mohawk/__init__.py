"""MOHAWK (Bick et al., 2024; as used in Llamba, 2025): distil a Transformer into Mamba-2 mixers in
three stages: align each mixer's matrix with the teacher's attention matrix, align each block's
output with the teacher's, then distil end to end."""
