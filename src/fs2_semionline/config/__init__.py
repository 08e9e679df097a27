"""Configuration: every section of both recipes, the relations between keys, the presets."""
