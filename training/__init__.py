"""Training-side code for moe-avatar: procedural dataset, models and training loops."""
