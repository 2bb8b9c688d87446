"""LoRA fine-tuning on TRL's SFTTrainer: records, answer-only loss, checkpoints, summary, merge."""
