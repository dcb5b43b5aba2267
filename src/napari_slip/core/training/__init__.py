"""Adapting models to a user's domain: fine-tuning CLIP, datasets, evaluation."""
