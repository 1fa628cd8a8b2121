"""The teacher: loading (embedded GGUF or a local model), tokens, CoT generation, the attention tap, calibration.

torch and transformers are imported inside the functions that need them, so nothing that only reads
chunks (the Lambda stages) ever imports them.
"""
