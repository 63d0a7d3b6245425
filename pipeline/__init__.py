"""The training pipeline: its definition (Azure ML YAML), its input contract
(TrainingRequest), and the submitters that run it (local executor, Azure ML)."""
