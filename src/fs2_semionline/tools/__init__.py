"""User tools beside the recipes: the demo, the study, plots, the configuration reference."""
