"""Backbone adaptation per fold from the cached crops (issue 12): crops, model, training, checkpoints."""
